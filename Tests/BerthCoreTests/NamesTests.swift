import BerthCore
import Testing

@Suite struct NamesTests {
    @Test(arguments: ["a", "my-registry", "reg.prod_1", String(repeating: "a", count: 255)])
    func validRegistryNames(_ name: String) throws {
        try Names.validateRegistry(name)
    }

    @Test(arguments: [
        ("", "empty"), ("Upper", "must start"), ("-lead", "must start"), ("a/b", "may contain only"),
        (String(repeating: "a", count: 256), "longer than 255"),
    ])
    func invalidRegistryNamesSayWhichRule(_ name: String, _ rule: String) {
        #expect {
            try Names.validateRegistry(name)
        } throws: { error in
            (error as? RegistryError)?.code == .nameInvalid && (error as? RegistryError)?.message.contains(rule) == true
        }
    }

    @Test func repositorySplitsAtTheRegistry() throws {
        let (registry, image) = try Names.splitRepository("prod/team/app-web")
        #expect(registry == "prod")
        #expect(image == "team/app-web")
    }

    @Test(arguments: ["noimage", "reg/App", "reg/a//b", "reg/-a", "reg/a-", "reg/a..b", "reg/a___b", "reg/"])
    func invalidRepositories(_ name: String) {
        #expect(throws: RegistryError.self) { try Names.splitRepository(name) }
    }

    @Test(arguments: ["reg/a__b", "reg/a--b", "reg/a.b/c_d", "reg/0"])
    func validRepositories(_ name: String) throws {
        _ = try Names.splitRepository(name)
    }

    @Test func tags() throws {
        try Names.validateTag("v1.0")
        try Names.validateTag("_x")
        try Names.validateTag("sha256-" + String(repeating: "a", count: 64) + ".sig")
        #expect(throws: RegistryError.self) { try Names.validateTag(".bad") }
        #expect(throws: RegistryError.self) { try Names.validateTag(String(repeating: "a", count: 129)) }
        #expect(throws: RegistryError.self) { try Names.validateTag("a b") }
    }

    @Test func digests() throws {
        let hex = String(repeating: "ab", count: 32)
        #expect(try ContentDigest(parsing: "sha256:" + hex).hex == hex)
        #expect(throws: RegistryError.self) { try ContentDigest(parsing: "sha256:" + hex.uppercased()) }
        #expect(throws: RegistryError.self) { try ContentDigest(parsing: "sha256:abc") }
        #expect(throws: RegistryError.self) { try ContentDigest(parsing: "md5:" + hex) }
        #expect(throws: RegistryError.self) { try ContentDigest(parsing: "nocolon") }
    }
}
