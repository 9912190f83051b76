import BerthCore
import Foundation
import Testing

private let layer = "sha256:" + String(repeating: "1", count: 64)
private let config = "sha256:" + String(repeating: "2", count: 64)

private func json(_ object: [String: Any]) -> [UInt8] {
    Array(try! JSONSerialization.data(withJSONObject: object))
}

private func imageManifest(mediaType: String = MediaType.ociManifest, extra: [String: Any] = [:]) -> [String: Any] {
    var object: [String: Any] = [
        "schemaVersion": 2, "mediaType": mediaType,
        "config": ["mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 10],
        "layers": [["mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 20]],
    ]
    object.merge(extra) { $1 }
    return object
}

@Suite struct ManifestTests {
    @Test func imageManifestNamesItsBlobs() throws {
        let bytes = json(imageManifest())
        let manifest = try ParsedManifest(bytes: bytes, contentType: MediaType.ociManifest)
        #expect(manifest.blobs == [config, layer])
        #expect(manifest.mediaType == MediaType.ociManifest)
        #expect(manifest.artifactType == "application/vnd.oci.image.config.v1+json")
        #expect(manifest.digest.hasPrefix("sha256:"))
    }

    @Test func dockerSchema2AndHelm() throws {
        _ = try ParsedManifest(bytes: json(imageManifest(mediaType: MediaType.dockerManifest)), contentType: MediaType.dockerManifest)
        var helm = imageManifest()
        helm["config"] = ["mediaType": MediaType.helmConfig, "digest": config, "size": 10]
        let manifest = try ParsedManifest(bytes: json(helm), contentType: MediaType.ociManifest)
        #expect(manifest.artifactType == MediaType.helmConfig)
    }

    /// A Content-Type of "" or ";" once trapped (the first part of an empty split); it counts as none now.
    @Test func emptyContentTypeCountsAsNone() throws {
        for header in ["", ";", " ; charset=utf-8", "\t"] {
            let manifest = try ParsedManifest(bytes: json(imageManifest()), contentType: header)
            #expect(manifest.mediaType == MediaType.ociManifest)
        }
        var untyped = imageManifest()
        untyped["mediaType"] = nil
        #expect(try ParsedManifest(bytes: json(untyped), contentType: ";").mediaType == MediaType.ociManifest)
        #expect(try ParsedManifest(bytes: json(untyped), contentType: " \(MediaType.dockerManifest) ; x=y").mediaType == MediaType.dockerManifest)
    }

    /// Only a foreign layer with urls may be absent; a config or an ordinary
    /// layer with urls is still required (and linked, so GC keeps it).
    @Test func onlyForeignLayersMayLiveElsewhere() throws {
        let foreignLayer = "sha256:" + String(repeating: "3", count: 64)
        var object = imageManifest()
        object["config"] = ["mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 10, "urls": ["https://x/c"]]
        object["layers"] = [
            ["mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 20, "urls": ["https://x/l"]],
            ["mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": foreignLayer, "size": 30, "urls": ["https://x/f"]],
        ]
        let manifest = try ParsedManifest(bytes: json(object), contentType: MediaType.ociManifest)
        #expect(manifest.blobs == [config, layer])
        #expect(manifest.blobDescriptors.map(\.size) == [10, 20])
    }

    /// Listed many times, a descriptor is checked and linked once; two sizes of one digest both stay (to be refused).
    @Test func repeatedDescriptorsCountOnce() throws {
        var image = imageManifest()
        let entry: [String: Any] = ["mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 20]
        image["layers"] = Array(repeating: entry, count: 1000) + [["mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 21]]
        let manifest = try ParsedManifest(bytes: json(image), contentType: MediaType.ociManifest)
        #expect(manifest.blobDescriptors.map(\.digest) == [config, layer, layer])
        #expect(manifest.blobDescriptors.map(\.size) == [10, 20, 21])
        let child: [String: Any] = ["mediaType": MediaType.ociManifest, "digest": layer, "size": 5]
        let index: [String: Any] = ["schemaVersion": 2, "mediaType": MediaType.ociIndex, "manifests": Array(repeating: child, count: 1000)]
        #expect(try ParsedManifest(bytes: json(index), contentType: MediaType.ociIndex).children.map(\.digest) == [layer])
    }

    @Test func indexNamesItsChildren() throws {
        let index: [String: Any] = [
            "schemaVersion": 2, "mediaType": MediaType.ociIndex,
            "manifests": [
                ["mediaType": MediaType.ociManifest, "digest": layer, "size": 5, "platform": ["os": "linux", "architecture": "amd64"]]
            ],
        ]
        let manifest = try ParsedManifest(bytes: json(index), contentType: MediaType.ociIndex)
        #expect(manifest.children.map(\.digest) == [layer])
        #expect(manifest.blobs.isEmpty)
    }

    @Test func subjectAndArtifactType() throws {
        let subject: [String: Any] = ["mediaType": MediaType.ociManifest, "digest": layer, "size": 3]
        let bytes = json(imageManifest(extra: ["subject": subject, "artifactType": "application/vnd.example.sbom"]))
        let manifest = try ParsedManifest(bytes: bytes, contentType: MediaType.ociManifest)
        #expect(manifest.subject?.digest == layer)
        #expect(manifest.artifactType == "application/vnd.example.sbom")
    }

    /// "If the artifactType is empty or missing in the image manifest, the value
    /// of artifactType MUST be set to the config descriptor mediaType"; an index's stays unset.
    @Test func anEmptyArtifactTypeCountsAsNone() throws {
        let image = try ParsedManifest(bytes: json(imageManifest(extra: ["artifactType": ""])), contentType: MediaType.ociManifest)
        #expect(image.artifactType == "application/vnd.oci.image.config.v1+json")
        let index: [String: Any] = ["schemaVersion": 2, "mediaType": MediaType.ociIndex, "artifactType": "", "manifests": []]
        #expect(try ParsedManifest(bytes: json(index), contentType: MediaType.ociIndex).artifactType == nil)
    }

    @Test(arguments: [
        (Array("not json".utf8), "not valid JSON"),
        (json(["schemaVersion": 1, "mediaType": MediaType.ociManifest]), "schemaVersion"),
        (json(["schemaVersion": 2, "mediaType": MediaType.ociManifest, "layers": []]), "no config"),
        (json(["schemaVersion": 2, "mediaType": MediaType.dockerSchema1Signed]), "schema 1"),
        (json(["schemaVersion": 2, "mediaType": "text/plain"]), "not supported"),
        (json(imageManifest(extra: ["layers": [["mediaType": "x", "digest": "sha256:zz", "size": 1]]])), "invalid"),
    ])
    func invalidManifests(_ bytes: [UInt8], _ reason: String) {
        #expect {
            _ = try ParsedManifest(bytes: bytes, contentType: nil)
        } throws: { error in
            guard let error = error as? RegistryError else { return false }
            return error.code == .manifestInvalid && error.message.contains(reason)
        }
    }

    @Test func mismatchedContentTypeAndOversizeAreRefused() {
        #expect(throws: RegistryError.self) {
            _ = try ParsedManifest(bytes: json(imageManifest()), contentType: MediaType.dockerManifest)
        }
        let big = [UInt8](repeating: 32, count: ParsedManifest.maxBytes + 1)
        #expect(throws: RegistryError.self) { _ = try ParsedManifest(bytes: big, contentType: nil) }
    }
}
