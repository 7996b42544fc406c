import Foundation
import Glibc
import Testing
import TernTestSupport

/// The venv `make test` prepares with anthunder (SOFA's Python bolt library).
let venvPython = TestPaths.root + "/.venv/bin/python"
let boltPeers = TestPaths.peers + "/bolt_peers.py"
let echoService = "com.tern.test.EchoService:1.0"

/// anthunder's asyncio bolt server on a port of the OS's choosing.
func startBoltServer(port: UInt16) throws -> ChildProcess {
    let server = try ChildProcess(venvPython, [boltPeers, "server", String(port)], name: "bolt-server")
    guard waitUntil(timeout: 15, { canConnect(port) }) else { throw TestError("bolt server did not start: \(server.output)") }
    return server
}

func boltConfig(listen: UInt16, upstream: UInt16, protocolSpelling: String = "\"downstream_protocol\": \"bolt\", \"upstream_protocol\": \"bolt\"",
                extra: String = "") -> String {
    """
    { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO",
        "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
           "routers": [{ "match": {"headers": [{"name": "service", "value": "com\\\\.tern\\\\..*", "regex": true}]},
                         "route": {"cluster_name": "up", "timeout": "3s"} }] }] }],
        "listeners": [{ "name": "l", "address": "127.0.0.1:\(listen)", "bind_port": true,
           "filter_chains": [{ "filters": [{ "type": "proxy", "config": { \(protocolSpelling), "router_config_name": "r"\(extra) } }] }] }] }],
      "cluster_manager": { "clusters": [{ "name": "up", "type": "SIMPLE", "lb_type": "LB_RANDOM",
         "connect_timeout": "1s", "hosts": [{ "address": "127.0.0.1:\(upstream)" }] }] } }
    """
}

@Suite(.serialized, .timeLimit(.minutes(5)))
final class BoltProxyTests {
    let serverPort = freePort()
    let serverSide = freePort()
    let clientSide = freePort()
    var server: ChildProcess?
    let serverTern: TernProcess
    let clientTern: TernProcess

    init() throws {
        server = try startBoltServer(port: serverPort)
        serverTern = try TernProcess(config: boltConfig(listen: serverSide, upstream: serverPort), waitFor: [serverSide])
        // The client side uses MOSN's older spelling: "X" with extend_config.sub_protocol.
        clientTern = try TernProcess(config: boltConfig(listen: clientSide, upstream: serverSide,
            protocolSpelling: "\"downstream_protocol\": \"X\", \"upstream_protocol\": \"X\", \"extend_config\": {\"sub_protocol\": \"bolt\"}"),
            waitFor: [clientSide])
    }

    deinit {
        clientTern.stop()
        serverTern.stop()
        server?.stop()
    }

    @Test func anthunderClientsCallAnAnthunderServerThroughTwoTerns() throws {
        let client = try ChildProcess(venvPython, [boltPeers, "client", String(clientSide), "40", "8"], name: "bolt-client")
        let status = client.waitForExit(timeout: 120)
        #expect(status == 0, "\(client.output)\n--- server side tern:\n\(serverTern.child.output.suffix(2000))")
        #expect(client.output.contains("ok 320"))
    }

    @Test func responsesNeverCrossBetweenCallersEvenOutOfOrder() throws {
        // Two connections use the same request ids; the server answers after different delays.
        let a = try RawClient(port: clientSide, timeout: 10), b = try RawClient(port: clientSide, timeout: 10)
        var expected: [String: String] = [:]
        for id in 1...12 {
            let delayA = (13 - id) * 15, delayB = (id % 4) * 40
            a.send(BoltTestFrame.request(id: UInt32(id), service: echoService, method: "slow", body: Array(String(delayA).utf8)))
            b.send(BoltTestFrame.request(id: UInt32(id), service: echoService, method: "slow", body: Array(String(delayB).utf8)))
            expected["a\(id)"] = "slow:\(delayA)"
            expected["b\(id)"] = "slow:\(delayB)"
        }
        let ra = BoltTestFrame.readResponses(a, 12), rb = BoltTestFrame.readResponses(b, 12)
        #expect(ra.count == 12 && rb.count == 12)
        for r in ra { #expect(String(decoding: r.content, as: UTF8.self) == expected["a\(r.id)"], "a id \(r.id)") }
        for r in rb { #expect(String(decoding: r.content, as: UTF8.self) == expected["b\(r.id)"], "b id \(r.id)") }
        #expect(Set(ra.map(\.id)) == Set(1...12) && Set(rb.map(\.id)) == Set(1...12))
        // Out of order really happened on connection a (its first request was the slowest).
        #expect(ra.first?.id != 1)
    }

    @Test func heartbeatsAreAnsweredByTernAndUnroutedRequestsGetNoProcessor() throws {
        let c = try RawClient(port: clientSide)
        c.send(BoltTestFrame.heartbeat(id: 99))
        c.send(BoltTestFrame.request(id: 100, service: "com.other.Service:1.0", method: "echo", body: [1]))
        let r = BoltTestFrame.readResponses(c, 2)
        try #require(r.count == 2)
        #expect(r[0].id == 99 && r[0].command == 0 && r[0].status == 0)
        #expect(r[1].id == 100 && r[1].status == 0x06)   // NO_PROCESSOR
    }

    @Test func aMalformedFrameClosesOnlyItsConnection() throws {
        let good = try RawClient(port: clientSide, timeout: 10)
        good.send(BoltTestFrame.request(id: 5, service: echoService, method: "slow", body: Array("300".utf8)))
        let bad = try RawClient(port: clientSide)
        bad.send([1, 1, 0, 9, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])   // command code 9
        #expect(bad.readAll().isEmpty)   // closed without an answer
        let r = BoltTestFrame.readResponses(good, 1)
        #expect(r.first?.id == 5 && r.first.map { String(decoding: $0.content, as: UTF8.self) } == "slow:300")
        #expect(waitUntil(timeout: 5) { clientTern.child.output.contains("does not fit command type") || clientTern.child.output.contains("unknown bolt command code") })
    }

    @Test func theBoltTimeoutFieldBoundsTheWait() throws {
        // The upstream reads and never answers, the route timeout is 3 s and heartbeats are 15 s
        // apart: a TIMEOUT well under a second can only come from Tern honouring the 300 ms field.
        let silentPort = freePort(), listen = freePort()
        let silent = try ChildProcess(venvPython, [boltPeers, "silent", String(silentPort)], name: "silent")
        defer { silent.stop() }
        #expect(waitUntil(timeout: 10) { canConnect(silentPort) })
        let tern = try TernProcess(config: boltConfig(listen: listen, upstream: silentPort), waitFor: [listen], extraArguments: ["--workers", "1"])
        defer { tern.stop() }
        let c = try RawClient(port: listen, timeout: 10)
        let start = Date()
        c.send(BoltTestFrame.request(id: 31, service: echoService, method: "echo", body: [1], timeoutMS: 300))
        let r = BoltTestFrame.readResponses(c, 1)
        let elapsed = Date().timeIntervalSince(start)
        #expect(r.first?.id == 31 && r.first?.status == 0x07, "\(r.map { ($0.id, $0.status) })")   // TIMEOUT
        #expect(elapsed >= 0.28 && elapsed < 1.0, "answered after \(elapsed) s")
        #expect(silent.output.contains("bytes"))   // the request did reach the upstream
    }

    @Test func onewayRequestsAreForwardedWithoutAnswer() throws {
        let c = try RawClient(port: clientSide, timeout: 10)
        c.send(BoltTestFrame.request(id: 41, service: echoService, method: "slow", body: Array("1".utf8), oneway: true))
        #expect(waitUntil(timeout: 10) { server?.output.contains("call slow 1\n") == true })
        c.send(BoltTestFrame.request(id: 42, service: echoService, method: "echo", body: Array("after".utf8)))
        let r = BoltTestFrame.readResponses(c, 1)
        #expect(r.first?.id == 42)   // the oneway got no answer; the next call's answer is the first
    }

    @Test func anUpstreamThatMissesHeartbeatsIsClosed() throws {
        let silentPort = freePort(), listen = freePort()
        let silent = try ChildProcess(venvPython, [boltPeers, "silent", String(silentPort)], name: "silent")
        defer { silent.stop() }
        #expect(waitUntil(timeout: 10) { canConnect(silentPort) })
        let tern = try TernProcess(config: boltConfig(listen: listen, upstream: silentPort,
                                                      extra: ", \"heartbeat_interval\": \"200ms\", \"heartbeat_max_misses\": 2"),
                                   waitFor: [listen], extraArguments: ["--workers", "1"])
        defer { tern.stop() }
        let c = try RawClient(port: listen, timeout: 10)
        c.send(BoltTestFrame.request(id: 51, service: echoService, method: "echo", body: [1]))
        let r = BoltTestFrame.readResponses(c, 1)
        #expect(r.first?.id == 51 && r.first?.status == 0x10, "\(tern.child.output)")   // CONNECTION_CLOSED after the misses
        #expect(tern.child.output.contains("missed 2 heartbeats"))
        #expect(silent.output.components(separatedBy: "bytes").count >= 3)   // the request, then heartbeats
    }

    @Test func boltV2FramesWithAndWithoutCRCCrossTernIntact() throws {
        let peerPort = freePort(), listen = freePort()
        let peer = try ChildProcess(venvPython, [boltPeers, "v2echo", String(peerPort)], name: "v2echo")
        defer { peer.stop() }
        #expect(waitUntil(timeout: 10) { canConnect(peerPort) })
        let tern = try TernProcess(config: boltConfig(listen: listen, upstream: peerPort,
                                                      protocolSpelling: "\"downstream_protocol\": \"boltv2\", \"upstream_protocol\": \"boltv2\""),
                                   waitFor: [listen], extraArguments: ["--workers", "1"])
        defer { tern.stop() }
        let c = try RawClient(port: listen, timeout: 10)
        // The ids collide with nothing upstream by chance: Tern rewrites them (and so the CRC).
        c.send(BoltTestFrame.requestV2(id: 0xABCD, service: echoService, body: Array("with-crc".utf8), crc: true))
        c.send(BoltTestFrame.requestV2(id: 0xABCE, service: echoService, body: Array("no-crc".utf8), crc: false))
        let r = BoltTestFrame.readV2Responses(c, 2)
        try #require(r.count == 2, "\(peer.output)")
        #expect(r[0].id == 0xABCD && String(decoding: r[0].content, as: UTF8.self) == "with-crc" && r[0].crcOK == true)
        #expect(r[1].id == 0xABCE && String(decoding: r[1].content, as: UTF8.self) == "no-crc" && r[1].crcOK == nil)
        #expect(!peer.output.contains("bad crc"))
        // A corrupted CRC from the client closes that connection, with a log line.
        var bad = BoltTestFrame.requestV2(id: 1, service: echoService, body: [1, 2, 3], crc: true)
        bad[bad.count - 1] ^= 0xFF
        let b = try RawClient(port: listen)
        b.send(bad)
        #expect(b.readAll().isEmpty)
        #expect(waitUntil(timeout: 5) { tern.child.output.contains("CRC32 mismatch") })
    }

    @Test func connectFailureAndEmptyClusterAnswerConnectionClosed() throws {
        let listen = freePort(), dead = freePort()
        let down = try TernProcess(config: boltConfig(listen: listen, upstream: dead), waitFor: [listen], extraArguments: ["--workers", "1"])
        defer { down.stop() }
        let c = try RawClient(port: listen, timeout: 10)
        c.send(BoltTestFrame.request(id: 71, service: echoService, method: "echo", body: [1]))
        c.send(BoltTestFrame.request(id: 72, service: echoService, method: "echo", body: [2]))
        let r = BoltTestFrame.readResponses(c, 2)
        #expect(r.map(\.id).sorted() == [71, 72] && r.allSatisfy { $0.status == 0x10 }, "\(r.map { ($0.id, $0.status) })")
        #expect(waitUntil(timeout: 5) { down.child.output.contains("connectFailed") })

        let emptyListen = freePort()
        let empty = try TernProcess(config: boltConfig(listen: emptyListen, upstream: dead)
                                        .replacingOccurrences(of: "\"hosts\": [{ \"address\": \"127.0.0.1:\(dead)\" }]", with: "\"hosts\": []"),
                                    waitFor: [emptyListen], extraArguments: ["--workers", "1"])
        defer { empty.stop() }
        let e = try RawClient(port: emptyListen, timeout: 10)
        e.send(BoltTestFrame.request(id: 73, service: echoService, method: "echo", body: [3]))
        let er = BoltTestFrame.readResponses(e, 1)
        #expect(er.first?.id == 73 && er.first?.status == 0x10)
        #expect(empty.child.output.contains("has no host"))
    }

    @Test func perClusterCountersAreKeptAndReportedOnDrain() throws {
        let listen = freePort()
        let tern = try TernProcess(config: boltConfig(listen: listen, upstream: serverPort), waitFor: [listen], extraArguments: ["--workers", "1"])
        let c = try RawClient(port: listen, timeout: 10)
        for id in 1...5 { c.send(BoltTestFrame.request(id: UInt32(id), service: echoService, method: "echo", body: [UInt8(id)])) }
        c.send(BoltTestFrame.request(id: 6, service: echoService, method: "slow", body: Array("2000".utf8), timeoutMS: 200))
        #expect(BoltTestFrame.readResponses(c, 6).count == 6)
        c.close()
        tern.child.signal(SIGTERM)
        #expect(tern.child.waitForExit(timeout: 10) == 0)
        let out = tern.child.output
        // 6 requests; 5 answered SUCCESS (status 0), 1 TIMEOUT (status 7); nothing left in flight.
        #expect(out.contains("cluster up: requests=6 in_flight=0"), "\(out)")
        #expect(out.contains("by_status={0:5,7:1}"), "\(out)")
        // The TIMEOUT may come from Tern (timeouts=1) or from the server itself, which honours the
        // same bolt timeout field; either way it is counted by status.
    }

    @Test func autoSniffsBoltAndHTTPOnOnePort() throws {
        let listen = freePort()
        let tern = try TernProcess(config: boltConfig(listen: listen, upstream: serverPort,
                                                      protocolSpelling: "\"downstream_protocol\": \"Auto\", \"upstream_protocol\": \"Auto\""),
                                   waitFor: [listen], extraArguments: ["--workers", "1"])
        defer { tern.stop() }
        let b = try RawClient(port: listen)
        b.send(BoltTestFrame.request(id: 61, service: echoService, method: "echo", body: Array("auto".utf8)))
        #expect(BoltTestFrame.readResponses(b, 1).first.map { String(decoding: $0.content, as: UTF8.self) } == "echo:auto")
        let h = try RawClient(port: listen)
        h.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(h.readResponses(1).first?.status == 404)   // HTTP recognised; the bolt-only routes do not match it
    }

    @Test func upstreamKilledMidFlightAnswersEveryCallerWithItsOwnIdThenRecovers() throws {
        let callers = try (0..<4).map { _ in try RawClient(port: clientSide, timeout: 10) }
        for (i, c) in callers.enumerated() {
            for k in 0..<3 { c.send(BoltTestFrame.request(id: UInt32(1000 + i * 10 + k), service: echoService, method: "slow", body: Array("2000".utf8))) }
        }
        // Every request has reached the server (it prints a line per call) before it dies.
        let arrived = waitUntil(timeout: 10) { (server?.output.components(separatedBy: "call slow 2000").count ?? 0) - 1 == 12 }
        #expect(arrived, "server: \(server?.output ?? "")\n--- server-side tern:\n\(serverTern.child.output.suffix(3000))\n--- client-side tern:\n\(clientTern.child.output.suffix(3000))")
        server?.stop()
        for (i, c) in callers.enumerated() {
            let r = BoltTestFrame.readResponses(c, 3)
            #expect(r.count == 3)
            #expect(Set(r.map(\.id)) == Set((0..<3).map { UInt32(1000 + i * 10 + $0) }))
            #expect(r.allSatisfy { $0.status == 0x10 }, "\(r.map(\.status))")   // CONNECTION_CLOSED
        }
        // The upstream returns on the same port; Tern reconnects and serves again.
        server = try startBoltServer(port: serverPort)
        let again = try RawClient(port: clientSide, timeout: 10)
        again.send(BoltTestFrame.request(id: 7, service: echoService, method: "echo", body: Array("back".utf8)))
        let r = BoltTestFrame.readResponses(again, 1)
        #expect(r.first.map { String(decoding: $0.content, as: UTF8.self) } == "echo:back")
    }
}

/// MOSN's RPC samples route with router entries that have no `match`: every call goes through.
@Suite(.timeLimit(.minutes(3)))
struct BoltRoutesWithoutMatchTests {
    @Test func anthunderCallsPassARouterEntryWithoutMatchOnAnAutoListener() throws {
        let serverPort = freePort(), listen = freePort()
        let server = try startBoltServer(port: serverPort)
        defer { server.stop() }
        let config = boltConfig(listen: listen, upstream: serverPort,
                                protocolSpelling: "\"downstream_protocol\": \"Auto\", \"upstream_protocol\": \"Auto\"")
            .replacingOccurrences(of: #""match": \{"headers": \[.*?\]\},\s*"#, with: "", options: .regularExpression)
        #expect(!config.contains("\"match\""))
        let tern = try TernProcess(config: config, waitFor: [listen])
        defer { tern.stop() }
        let client = try ChildProcess(venvPython, [boltPeers, "client", String(listen), "10", "2"], name: "nomatch-client")
        #expect(client.waitForExit(timeout: 60) == 0, "\(client.output)\n--- tern:\n\(tern.child.output.suffix(2000))")
        #expect(client.output.contains("ok 20"))
    }
}
