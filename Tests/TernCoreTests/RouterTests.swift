import Testing
@testable import TernCore
import TernTestSupport

func direct(_ status: Int) -> RouteAction { .direct(status: status, body: [], headers: HeaderMutations()) }

func statusOf(_ route: Route?) -> Int? {
    guard let route, case .direct(let s, _, _) = route.action else { return nil }
    return s
}

struct RouterTests {
    let table: RouteTable = {
        let exactHost = VirtualHost(name: "exact", routes: [Route(path: .prefix(Array("/".utf8)), headers: [], action: direct(201))])
        let suffixHost = VirtualHost(name: "suffix", routes: [Route(path: .any, headers: [], action: direct(202))])
        let longerSuffix = VirtualHost(name: "suffix2", routes: [Route(path: .any, headers: [], action: direct(207))])
        let prefixHost = VirtualHost(name: "prefix", routes: [Route(path: .any, headers: [], action: direct(203))])
        let regex = try! RouteRegex("^/items/[0-9]+$")
        let defaultHost = VirtualHost(name: "default", routes: [
            Route(path: .exact(Array("/exact".utf8)), headers: [], action: direct(210)),
            Route(path: .regex(regex), headers: [], action: direct(211)),
            Route(path: .prefix(Array("/api".utf8)), headers: [HeaderMatcher(name: "X-Version", value: "V2", regex: nil, caseSensitive: false)], action: direct(212)),
            Route(path: .prefix(Array("/api".utf8)), headers: [HeaderMatcher(name: "service", value: "com\\.a\\..*:1\\.0", regex: try! RouteRegex("com\\.a\\..*:1\\.0"), caseSensitive: true)], action: direct(213)),
            Route(path: .prefix(Array("/api".utf8)), headers: [], action: direct(214)),
        ])
        return RouteTable(name: "t", virtualHosts: [exactHost, suffixHost, longerSuffix, prefixHost, defaultHost],
                          domains: [["www.example.com", "alias.example.com:8080"], ["*.example.com"], ["*.b.example.com"], ["api.*"], ["*"]])
    }()

    @Test func domainsMatchExactThenSuffixThenPrefixThenDefault() {
        #expect(statusOf(table.route(FakeRequest(path: "/", host: "www.example.com"))) == 201)
        #expect(statusOf(table.route(FakeRequest(path: "/", host: "WWW.Example.COM"))) == 201)
        #expect(statusOf(table.route(FakeRequest(path: "/", host: "alias.example.com"))) == 201) // port ignored
        #expect(statusOf(table.route(FakeRequest(path: "/", host: "x.example.com"))) == 202)
        #expect(statusOf(table.route(FakeRequest(path: "/", host: "x.b.example.com"))) == 207) // longest suffix wins
        #expect(statusOf(table.route(FakeRequest(path: "/", host: "api.internal"))) == 203)
        #expect(statusOf(table.route(FakeRequest(path: "/exact", host: "other"))) == 210)
        #expect(statusOf(table.route(FakeRequest(path: "/exact", host: ""))) == 210)
    }

    @Test func routesMatchInOrderByPathAndHeaders() {
        #expect(statusOf(table.route(FakeRequest(path: "/exact/more"))) == nil)
        #expect(statusOf(table.route(FakeRequest(path: "/items/42"))) == 211)
        #expect(statusOf(table.route(FakeRequest(path: "/items/42x"))) == nil)
        #expect(statusOf(table.route(FakeRequest(path: "/api/x", headers: [("x-version", "v2")]))) == 212)
        #expect(statusOf(table.route(FakeRequest(path: "/api/x", headers: [("service", "com.a.Foo:1.0")]))) == 213)
        #expect(statusOf(table.route(FakeRequest(path: "/api/x", headers: [("service", "com.b.Foo:1.0")]))) == 214)
        #expect(statusOf(table.route(FakeRequest(path: "/API"))) == nil) // paths are case-sensitive
    }

    @Test func regexesSearchLikeGoUnlessAnchored() {
        let r = try! RouteRegex("[0-9]+")
        let b = Array("/a/42/b".utf8)
        #expect(b.withUnsafeBufferPointer { r.matches($0.baseAddress!, $0.count) })
        let anchored = try! RouteRegex("^[0-9]+$")
        #expect(!b.withUnsafeBufferPointer { anchored.matches($0.baseAddress!, $0.count) })
    }

    @Test func mosnSofaRuleServiceDotStarMatchesAnyService() {
        let any = HeaderMatcher(name: "service", value: ".*", regex: nil, caseSensitive: true)
        let t = RouteTable(name: "t", virtualHosts: [VirtualHost(name: "a", routes: [Route(path: .any, headers: [any], action: direct(200))])], domains: [["*"]])
        #expect(statusOf(t.route(FakeRequest(path: "", headers: [("service", "com.a.B:1.0")]))) == 200)
        #expect(t.route(FakeRequest(path: "", headers: [])) == nil)   // the header must be present
        let literal = HeaderMatcher(name: "x-other", value: ".*", regex: nil, caseSensitive: true)
        let u = RouteTable(name: "u", virtualHosts: [VirtualHost(name: "a", routes: [Route(path: .any, headers: [literal], action: direct(200))])], domains: [["*"]])
        #expect(u.route(FakeRequest(path: "", headers: [("x-other", "abc")])) == nil)   // only `service` has the SOFA rule
    }

    @Test func noDefaultHostMeansNoRoute() {
        let t = RouteTable(name: "t", virtualHosts: [VirtualHost(name: "a", routes: [Route(path: .any, headers: [], action: direct(200))])], domains: [["a.com"]])
        #expect(t.route(FakeRequest(path: "/", host: "b.com")) == nil)
        #expect(statusOf(t.route(FakeRequest(path: "/", host: "a.com"))) == 200)
    }

    @Test func weightedClustersFollowWeights() {
        let route = ClusterRoute(clusters: [WeightedCluster(clusterIndex: 0, weight: 90), WeightedCluster(clusterIndex: 1, weight: 10)], timeoutMS: 0)
        var random = FastRandom(seed: 42)
        var counts = [0, 0]
        for _ in 0..<10_000 { counts[route.pickCluster(&random).clusterIndex] += 1 }
        #expect(counts[0] > 8_500 && counts[0] < 9_500)
    }
}

struct CoreTests {
    @Test func timerHeapFiresInDeadlineOrderAndCancels() {
        final class Recorder: TimerTarget {
            var fired: [Int] = []
            func timerFired(_ timer: LoopTimer) { fired.append(timer.tag) }
        }
        let r = Recorder()
        let heap = TimerHeap()
        let timers = (0..<5).map { LoopTimer(target: r, tag: $0) }
        for (i, d) in [50, 10, 40, 20, 30].enumerated() { heap.arm(timers[i], at: Int64(d)) }
        heap.cancel(timers[2])
        heap.arm(timers[4], at: 5)
        heap.fireDue(now: 100)
        #expect(r.fired == [4, 1, 3, 0])
    }

    @Test func byteBufferGrowsCompactsAndWritesNumbers() {
        let b = ByteBuffer(capacity: 64)
        for _ in 0..<100 { b.write("abcdefgh") }
        #expect(b.readableBytes == 800)
        b.consume(795)
        b.writeDecimal(1234567)
        b.writeByte(32)
        b.writeHex(0x1f2e)
        #expect(String(decoding: b.readableArray(), as: UTF8.self) == "defgh1234567 1f2e")
    }

    @Test func socketAddressesParse() {
        #expect(SocketAddress.parse("127.0.0.1:80")?.port == 80)
        #expect(SocketAddress.parse("[::1]:8080")?.family == 10)
        #expect(SocketAddress.parse("localhost:1")?.port == 1)
        #expect(SocketAddress.parse("127.0.0.1") == nil)
        #expect(SocketAddress.parse("1.2.3.4:99999") == nil)
        #expect(SocketAddress.parse("example.com:80") == nil)
    }
}

struct AddressRangeTests {
    @Test func ipv4AndIPv6BlocksContainTheirAddressesOnly() throws {
        let ten = try #require(AddressRange(address: "10.0.0.0", length: 8))
        #expect(ten.contains(SocketAddress.parse("10.255.1.2:1")!))
        #expect(!ten.contains(SocketAddress.parse("11.0.0.1:1")!))
        // An IPv4 client seen through a dual-stack socket still matches an IPv4 block.
        #expect(ten.contains(SocketAddress.parse("[::ffff:10.1.1.1]:1")!))
        #expect(!ten.contains(SocketAddress.parse("[::1]:1")!))
        let host = try #require(AddressRange(address: "192.168.1.7", length: 32))
        #expect(host.contains(SocketAddress.parse("192.168.1.7:9")!) && !host.contains(SocketAddress.parse("192.168.1.6:9")!))
        let all = try #require(AddressRange(address: "0.0.0.0", length: 0))
        #expect(all.contains(SocketAddress.parse("1.2.3.4:5")!))
        let v6 = try #require(AddressRange(address: "2001:db8::", length: 65))
        #expect(v6.contains(SocketAddress.parse("[2001:db8::7fff:1]:1")!))
        #expect(!v6.contains(SocketAddress.parse("[2001:db8::8000:0:0:1]:1")!))
        #expect(!v6.contains(SocketAddress.parse("10.0.0.1:1")!))
        #expect(AddressRange(address: "10.0.0.0", length: 33) == nil)
        #expect(AddressRange(address: "::", length: 129) == nil)
        #expect(AddressRange(address: "example.com", length: 8) == nil)
    }
}
