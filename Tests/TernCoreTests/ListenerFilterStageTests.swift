import Testing
@testable import TernCore

/// Which listener owns an original destination (the hand-off of a capturing listener).
struct ListenerFilterStageTests {
    let chains = (0..<6).map { _ in NetworkFilterChain(filters: []) }

    func stage(_ listeners: [(String, String, Bool)]) -> ListenerFilterStage {
        let targets = listeners.enumerated().map { i, l in
            HandOffTarget(name: l.0, address: SocketAddress.parse(l.1)!, isPortFallback: l.2, entry: chains[i])
        }
        return ListenerFilterStage(filters: [], ownChain: chains[5], handOff: targets, logger: Logger(level: .fatal, fd: 2))
    }

    func owner(_ stage: ListenerFilterStage, _ address: String) -> String? { stage.owner(of: SocketAddress.parse(address)!)?.name }

    @Test func exactAddressFirstThenThePortsFallbackOfTheSameFamily() {
        let s = stage([("any80", "0.0.0.0:80", true), ("exact", "10.0.0.2:80", false), ("any6", "[::]:80", true),
                       ("exact6", "[fd00::2]:80", false), ("other-port", "0.0.0.0:81", true)])
        #expect(owner(s, "10.0.0.2:80") == "exact")
        #expect(owner(s, "10.0.0.3:80") == "any80")
        #expect(owner(s, "[fd00::2]:80") == "exact6")
        #expect(owner(s, "[fd00::3]:80") == "any6")
        #expect(owner(s, "10.0.0.3:82") == nil)
        // A listener that is not a fallback owns only its exact address.
        let noFallback = stage([("lo", "127.0.0.1:80", false)])
        #expect(owner(noFallback, "127.0.0.1:80") == "lo")
        #expect(owner(noFallback, "10.0.0.1:80") == nil)
    }

    @Test func aV4MappedOriginalDestinationMatchesIPv4Listeners() {
        let mapped = SocketAddress.parse("[::ffff:10.0.0.2]:80")!.unmappingIPv4
        #expect(mapped == SocketAddress.parse("10.0.0.2:80")!)
        #expect(mapped.description == "10.0.0.2:80")
        #expect(owner(stage([("exact", "10.0.0.2:80", false)]), "10.0.0.2:80") == "exact")
        let plain6 = SocketAddress.parse("[fd00::2]:80")!
        #expect(plain6.unmappingIPv4 == plain6)
    }
}
