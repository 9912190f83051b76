import BerthCore
import Testing

@Suite struct HTTPTextTests {
    @Test func trimsSpacesAndTabsOnly() {
        #expect(" \t abc def\t ".trimmingHTTPWhitespace() == "abc def")
        #expect("abc".trimmingHTTPWhitespace() == "abc")
        #expect("".trimmingHTTPWhitespace() == "")
        #expect(" \t ".trimmingHTTPWhitespace() == "")
        #expect("\nabc\r".trimmingHTTPWhitespace() == "\nabc\r")
        #expect("x y"[...].trimmingHTTPWhitespace() == "x y")
    }

    @Test func comparesPrefixIgnoringASCIICase() {
        #expect("Basic abc".hasASCIICaseInsensitivePrefix("basic "))
        #expect("BEARER x".hasASCIICaseInsensitivePrefix("bearer "))
        #expect("basic".hasASCIICaseInsensitivePrefix("basic ") == false)
        #expect("Basix abc".hasASCIICaseInsensitivePrefix("basic ") == false)
        #expect("".hasASCIICaseInsensitivePrefix(""))
        #expect("Bäsic ".hasASCIICaseInsensitivePrefix("basic ") == false)
    }
}
