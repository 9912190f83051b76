import BerthCore
import Testing

@Suite struct PatternTests {
    @Test(arguments: [
        ("app", "app", true), ("app", "app2", false), ("app", "team/app", false),
        ("*", "app", true), ("*", "team/app", false), ("*", "", true),
        ("team/*", "team/app", true), ("team/*", "team/a/b", false), ("team/*", "team", false),
        ("**", "team/a/b", true), ("**", "", true),
        ("team/**", "team/app", true), ("team/**", "team/a/b", true), ("team/**", "team", false),
        ("**/app", "x/app", true), ("**/app", "x/y/app", true), ("**/app", "app", false),
        ("v?.*", "v1.0", true), ("v?.*", "v2.13", true), ("v?.*", "v10.1", false), ("?", "/", false),
        ("{latest,stable}", "latest", true), ("{latest,stable}", "stable", true), ("{latest,stable}", "main", false),
        ("release-{1,2}.*", "release-1.0", true), ("release-{1,2}.*", "release-3.0", false),
        ("{v*,release-?}", "v2", true), ("{v*,release-?}", "release-x", true), ("{v*,release-?}", "release-10", false),
        ("{a,{b,c}d}", "cd", true), ("{a,{b,c}d}", "a", true), ("{a,{b,c}d}", "c", false),
        ("x{,-dev}", "x", true), ("x{,-dev}", "x-dev", true),
        ("\\*", "*", true), ("\\*", "a", false), ("a\\{b", "a{b", true),
        ("*-*-*-*-*-*-*-*-*-*-*-*x", String(repeating: "a-", count: 40) + "y", false),
        // Runs that start at several places, across and short of a slash.
        ("*a*/b", "xaya/b", true), ("*a*/b", "xa/y/b", false), ("a**a/b", "ax/a/ya/b", true), ("**a*", "x/ya/b", false),
        ("*/*", "a/", true), ("*/*", "/a", true), ("*/*", "a/b/c", false),
        // 127 runs against a 250-character name (the review's case; the old walk from
        // every start gave the same answer, only slower: this guards the result only).
        (String(repeating: "**", count: 127) + "b", String(repeating: "a", count: 250), false),
    ])
    func matchesWholeNames(_ pattern: String, _ name: String, _ expected: Bool) throws {
        #expect(try Pattern(pattern).matches(name) == expected)
    }

    @Test(arguments: [
        ("", "1 to 256"), ("{a,b", "never closed"), ("a}", "outside braces"), ("a,b", "outside braces"),
        ("a\\", "escapes nothing"), (String(repeating: "a", count: 257), "1 to 256"),
        (String(repeating: "e\u{301}\u{301}", count: 256), "1 to 256"),
    ])
    func refusesMalformedPatterns(_ pattern: String, _ message: String) {
        #expect {
            try Pattern(pattern)
        } throws: { error in
            (error as? PatternError)?.message.contains(message) == true
        }
    }
}
