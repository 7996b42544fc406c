import Foundation
import Glibc
import Testing
import TernTestSupport

/// The `mirror` stream filter with routes' `request_mirror_policies`, end to end: the real binary
/// (one worker) between curl / anthunder and real upstreams, with shadows that answer, shadows
/// that are dead, a shadow that never reads, and MOSN's broadcast.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class MirrorTests {
    let upstream: PythonUpstream
    let shadow: PythonUpstream
    let broadcastA: PythonUpstream
    let broadcastB: PythonUpstream
    /// Accepts connections and never reads from them: a shadow slower than any client.
    let stuckShadow: TCPPeer
    let boltServerPort = freePort()
    let boltShadowPort = freePort()
    let boltServer: ChildProcess
    let boltShadow: ChildProcess
    let deadPort = freePort()
    let tern: TernProcess
    let ports: [String: UInt16]

    /// (listener, protocol, mirror filter config, mirror cluster, percent)
    static let listeners: [(name: String, protocolName: String, filter: String, cluster: String, percent: Int)] = [
        ("twice", "Http1", #"{"amplification": 2}"#, "shadow", 100),
        ("dead", "Http1", "{}", "deadShadow", 100),
        ("half", "Http1", "{}", "shadow", 50),
        ("stuck", "Http1", "{}", "stuckShadow", 100),
        ("broadcast", "Http1", #"{"amplification": 10, "broadcast": true}"#, "broadcastShadow", 100),
        ("bolt", "bolt", "{}", "boltShadow", 100),
        ("boltDead", "bolt", "{}", "deadShadow", 100),
    ]

    init() throws {
        upstream = try PythonUpstream()
        shadow = try PythonUpstream()
        broadcastA = try PythonUpstream()
        broadcastB = try PythonUpstream()
        stuckShadow = try TCPPeer(timeout: 30) { fd in
            // Never read; hold the connection until Tern lets go of it.
            while true {
                var pfd = pollfd(fd: fd, events: Int16(0x2000) /* POLLRDHUP */, revents: 0)
                if poll(&pfd, 1, 30_000) != 0 { break }
            }
            Glibc.close(fd)
        }
        boltServer = try startBoltServer(port: boltServerPort)
        boltShadow = try startBoltServer(port: boltShadowPort)
        var ports: [String: UInt16] = [:]
        for l in Self.listeners { ports[l.name] = distinctFreePort(avoiding: Array(ports.values)) }
        self.ports = ports
        let routers = Self.listeners.map { l in
            let match = l.protocolName == "bolt" ? #"{"headers": [{"name": "service", "value": ".*", "regex": true}]}"# : #"{"prefix": "/"}"#
            return """
            { "router_config_name": "\(l.name)", "virtual_hosts": [{ "name": "h", "domains": ["*"],
                "routers": [{ "match": \(match), "route": {"cluster_name": "\(l.protocolName == "bolt" ? "boltUp" : "up")", "timeout": "5s"},
                              "request_mirror_policies": {"cluster": "\(l.cluster)", "percent": \(l.percent)} }] }] }
            """
        }.joined(separator: ",\n")
        let listeners = Self.listeners.map { l in
            """
            { "name": "\(l.name)", "address": "127.0.0.1:\(ports[l.name]!)", "bind_port": true,
              "stream_filters": [{"type": "mirror", "config": \(l.filter)}],
              "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "\(l.protocolName)",
                 "upstream_protocol": "\(l.protocolName)", "router_config_name": "\(l.name)" } }] }] }
            """
        }.joined(separator: ",\n")
        func cluster(_ name: String, _ ports: [UInt16]) -> String {
            let hosts = ports.map { "{ \"address\": \"127.0.0.1:\($0)\" }" }.joined(separator: ", ")
            return "{ \"name\": \"\(name)\", \"type\": \"SIMPLE\", \"connect_timeout\": \"1s\", \"hosts\": [\(hosts)] }"
        }
        let clusters = [cluster("up", [upstream.port]), cluster("shadow", [shadow.port]), cluster("deadShadow", [deadPort]),
                        cluster("stuckShadow", [stuckShadow.port]), cluster("broadcastShadow", [broadcastA.port, broadcastB.port]),
                        cluster("boltUp", [boltServerPort]), cluster("boltShadow", [boltShadowPort])].joined(separator: ",\n")
        let config = """
            { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO", "routers": [\(routers)], "listeners": [\(listeners)] }],
              "cluster_manager": { "clusters": [\(clusters)] } }
            """
        tern = try TernProcess(config: config, waitFor: Array(ports.values), extraArguments: ["--workers", "1"])
    }

    deinit {
        tern.stop()
        boltServer.stop()
        boltShadow.stop()
        upstream.stop(); shadow.stop(); broadcastA.stop(); broadcastB.stop()
        stuckShadow.stop()
    }

    func url(_ name: String, _ path: String) -> String { "http://127.0.0.1:\(ports[name]!)\(path)" }

    /// curl's status and body per URL (one curl: the URLs share a keep-alive connection).
    func curl(_ urls: [String], _ extra: [String] = []) throws -> [(status: Int, body: String)] {
        var arguments = ["-s", "--max-time", "20"] + extra
        for u in urls { arguments += ["-w", "\n%{http_code}\n", u] }
        let out = try run("/usr/bin/curl", arguments, timeout: 60).1
        var results: [(Int, String)] = []
        var body: [Substring] = []
        for line in out.split(separator: "\n", omittingEmptySubsequences: false) {
            if let code = Int(line), line.count == 3 { results.append((code, body.joined(separator: "\n"))); body = [] } else if !line.isEmpty { body.append(line) }
        }
        return results
    }

    func count(_ log: [String], _ line: String) -> Int { log.filter { $0 == line }.count }

    @Test func mirroredRequestsReachTheShadowWithTheirBodiesWhileTheClientGetsTheRealAnswer() throws {
        let marker = "/m-\(UUID().uuidString)"
        let got = try curl((0..<5).map { url("twice", "\(marker)/\($0)") })
        #expect(got.count == 5 && got.allSatisfy { $0.status == 200 && $0.body.hasPrefix("hello from upstream \(marker)") }, "\(got)")
        // amplification 2: each request twice at the shadow, once at the real upstream.
        #expect(waitUntil(timeout: 5) { (0..<5).allSatisfy { self.count(self.shadow.requestLog, "GET \(marker)/\($0)") == 2 } }, "\(shadow.requestLog.suffix(12))")
        #expect((0..<5).allSatisfy { count(upstream.requestLog, "GET \(marker)/\($0)") == 1 })

        // Bodies: by length and chunked, copied byte for byte (the shadow logs each body's sha256).
        let (file, sum) = try temporaryPatternFile(size: 300_000)
        defer { try? FileManager.default.removeItem(atPath: file) }
        for (i, framing) in [[], ["-H", "Transfer-Encoding: chunked"]].enumerated() {
            let target = "/sha?\(marker.dropFirst())-\(i)"
            let posted = try curl([url("twice", target)], framing + ["--data-binary", "@\(file)"])
            #expect(posted.first?.status == 200 && posted.first?.body == "\(sum) 300000", "\(framing): \(posted)")
            #expect(waitUntil(timeout: 5) { self.count(self.shadow.requestLog, "sha \(target) \(sum) 300000") == 2 }, "\(shadow.requestLog.suffix(6))")
        }
    }

    @Test func aDeadShadowChangesNothingForTheClient() throws {
        let marker = "/dead-\(UUID().uuidString)"
        let started = Date()
        let got = try curl((0..<40).map { url("dead", "\(marker)/\($0)") })
        #expect(got.count == 40 && got.allSatisfy { $0.status == 200 }, "\(got.filter { $0.status != 200 })")
        // Connect refusals to the shadow cost the client nothing it could wait on.
        #expect(Date().timeIntervalSince(started) < 10)
        #expect((0..<40).allSatisfy { count(upstream.requestLog, "GET \(marker)/\($0)") == 1 })
    }

    @Test func aShadowThatNeverReadsNeitherSlowsNorBreaksALargeUpload() throws {
        // 8 MB is far past the 1 MiB a copy may fall behind: the copy is dropped, the real
        // upload goes on at the client's pace.
        let (file, sum) = try temporaryPatternFile(size: 8_000_000)
        defer { try? FileManager.default.removeItem(atPath: file) }
        for framing in [[], ["-H", "Transfer-Encoding: chunked"]] {
            let posted = try curl([url("stuck", "/sha")], framing + ["--data-binary", "@\(file)"])
            #expect(posted.first?.status == 200 && posted.first?.body == "\(sum) 8000000", "\(framing): \(posted)")
        }
        // The copies did start (the stuck shadow holds them), and the listener serves on.
        #expect(stuckShadow.accepted >= 2)
        #expect(try curl([url("stuck", "/after")]).first?.status == 200)
    }

    @Test func percentMirrorsThatShareOfRequests() throws {
        let marker = "/half-\(UUID().uuidString)"
        let n = 200
        let got = try curl((0..<n).map { url("half", "\(marker)/\($0)") })
        #expect(got.count == n && got.allSatisfy { $0.status == 200 })
        // Wait until the shadow's count stops moving, then check it against 50 % (binomial sd ~7.1: ±35 is ±5 sd).
        var last = -1
        _ = waitUntil(timeout: 5) {
            let now = self.shadow.requestLog.filter { $0.hasPrefix("GET \(marker)/") }.count
            defer { last = now }
            return now == last && now > 0
        }
        #expect(last >= 65 && last <= 135, "mirrored \(last) of \(n)")
    }

    @Test func broadcastCopiesEveryRequestToEveryShadowHostAndTernAnswers200() throws {
        let marker = "/bc-\(UUID().uuidString)"
        let got = try curl((0..<4).map { url("broadcast", "\(marker)/\($0)") })
        #expect(got.count == 4 && got.allSatisfy { $0.status == 200 && $0.body.isEmpty }, "\(got)")
        #expect(waitUntil(timeout: 5) {
            (0..<4).allSatisfy { self.count(self.broadcastA.requestLog, "GET \(marker)/\($0)") == 1 && self.count(self.broadcastB.requestLog, "GET \(marker)/\($0)") == 1 }
        }, "\(broadcastA.requestLog.suffix(4)) \(broadcastB.requestLog.suffix(4))")
        // The route's own cluster gets nothing: the copies are the request's only destinations.
        #expect(!upstream.requestLog.contains { $0.hasPrefix("GET \(marker)") })
        // A body goes to both hosts whole, and the connection serves on.
        let (file, sum) = try temporaryPatternFile(size: 100_000)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let target = "/sha?\(marker.dropFirst())"
        let posted = try curl([url("broadcast", target), url("broadcast", "\(marker)/after")], ["--data-binary", "@\(file)"])
        #expect(posted.count == 2 && posted.allSatisfy { $0.status == 200 }, "\(posted)")
        #expect(waitUntil(timeout: 5) {
            self.count(self.broadcastA.requestLog, "sha \(target) \(sum) 100000") == 1 && self.count(self.broadcastB.requestLog, "sha \(target) \(sum) 100000") == 1
        })
    }

    func boltCalls(_ name: String, method: String, body: String, count: Int) throws -> [String] {
        let client = try ChildProcess(venvPython, [boltPeers, "once", String(ports[name]!), method, body, String(count)], name: "bolt-once")
        #expect(client.waitForExit(timeout: 60) == 0, "\(client.output)")
        return client.output.split(separator: "\n").map(String.init).filter { $0.hasPrefix("result") || $0.hasPrefix("error") }
    }

    @Test func boltCallsAreCopiedToTheShadowAndAnsweredByTheRealServer() throws {
        // `slow` waits its body in ms and prints it: a number only this test uses marks its calls.
        let marker = String(Int.random(in: 10...99))
        let out = try boltCalls("bolt", method: "slow", body: marker, count: 6)
        #expect(out == Array(repeating: "result slow:\(marker)", count: 6), "\(out)")
        #expect(waitUntil(timeout: 5) { self.boltShadow.output.components(separatedBy: "call slow \(marker)\n").count - 1 == 6 }, "\(boltShadow.output.suffix(300))")
        #expect(boltServer.output.components(separatedBy: "call slow \(marker)\n").count - 1 == 6)
    }

    @Test func boltCallsWithADeadShadowAreAnsweredAsUsual() throws {
        let out = try boltCalls("boltDead", method: "echo", body: "x", count: 8)
        #expect(out == Array(repeating: "result echo:x", count: 8), "\(out)")
    }
}
