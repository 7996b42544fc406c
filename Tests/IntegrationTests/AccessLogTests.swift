import Foundation
import Glibc
import Testing
import TernTestSupport

/// Listener `access_logs` (MOSN's keys and `%variable%` names): one line per request with the
/// code the client got, written off the workers, flushed at exit and reopened on SIGUSR1.
@Suite(.serialized, .timeLimit(.minutes(5)))
final class AccessLogTests {
    let upstream: PythonUpstream
    let directory = NSTemporaryDirectory() + "tern-access-\(UUID().uuidString.prefix(8))"
    let port = freePort()

    init() throws {
        upstream = try PythonUpstream()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit {
        upstream.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    static let fields = "%protocol% %request_method% %request_path% %request_uri% %response_code% %response_flag% %bytes_received% %bytes_sent% %upstream_cluster% %upstream_host% %request_header_x-id% %response_header_x-upstream-seen-headers% %trace_id%"

    func httpConfig(logPath: String = "/tmp/x", defaultLog: String = "stderr", format: String = fields) -> String {
        """
        { "servers": [{ "default_log_path": "\(defaultLog)", "default_log_level": "INFO",
            "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [
                { "match": {"prefix": "/direct"}, "direct_response": {"status": 201, "body": "made here"} },
                { "match": {"prefix": "/dead"}, "route": {"cluster_name": "dead"} },
                { "match": {"prefix": "/up"}, "route": {"cluster_name": "up"} } ] }] }],
            "listeners": [{ "name": "l", "address": "127.0.0.1:\(port)", "bind_port": true,
               "access_logs": [{ "log_path": "\(directory)/mosn-default.log" },
                               { "log_path": "\(logPath)", "log_format": "\(format)" }],
               "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "router_config_name": "r" } }] }] }] }],
          "cluster_manager": { "clusters": [
             { "name": "up", "hosts": [{ "address": "127.0.0.1:\(upstream.port)" }] },
             { "name": "dead", "connect_timeout": "1s", "hosts": [{ "address": "127.0.0.1:\(freePort())" }] } ] } }
        """
    }

    func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    func exchange(_ request: String) -> HTTPResponse? {
        guard let c = try? RawClient(port: port, timeout: 10) else { return nil }
        defer { c.close() }
        c.send(request)
        return c.readResponses(1).first
    }

    @Test func oneLinePerHTTPRequestWithTheCodeTheClientGotFlushedAtExit() throws {
        let path = directory + "/fields.log"
        let tern = try TernProcess(config: httpConfig(logPath: path), waitFor: [port], extraArguments: ["--workers", "2"])
        defer { tern.stop() }
        let answers = [
            exchange("GET /up/a?q=1 HTTP/1.1\r\nHost: x\r\nX-Id: first\r\nSOFA-TraceId: 0a1b2c\r\n\r\n"),
            exchange("POST /up/sha HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
            exchange("GET /direct HTTP/1.1\r\nHost: x\r\n\r\n"),
            exchange("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"),
            exchange("GET /dead HTTP/1.1\r\nHost: x\r\n\r\n"),
            exchange("GET /bad path HTTP/1.1\r\nHost: x\r\n\r\n"),
        ]
        #expect(answers.map { $0?.status ?? 0 } == [200, 200, 201, 404, 502, 400])
        // Lines reach the file within about 100 ms, without waiting for the exit.
        #expect(waitUntil(timeout: 5) { self.lines(path).count == 6 }, "\(lines(path))\n\(tern.child.output)")
        tern.child.signal(SIGTERM)
        #expect(tern.child.waitForExit(timeout: 10) == 0)
        let logged = lines(path)
        #expect(logged.count == 6, "\(logged)")
        let byPath = Dictionary(logged.map { ($0.split(separator: " ")[2], $0) }, uniquingKeysWith: { a, _ in a })
        let upBody = answers[0]?.body.count ?? -1
        let seen = answers[0]?.header("x-upstream-seen-headers") ?? "?"
        #expect(byPath["/up/a"] == "Http1 GET /up/a /up/a?q=1 200 false 0 \(upBody) up 127.0.0.1:\(upstream.port) first \(seen) 0a1b2c", "\(logged)")
        #expect(byPath["/up/sha"]?.hasPrefix("Http1 POST /up/sha /up/sha 200 false 5 \(answers[1]?.body.count ?? -1) up ") == true, "\(logged)")
        #expect(byPath["/direct"] == "Http1 GET /direct /direct 201 false 0 9 - - - - -", "\(logged)")
        #expect(byPath["/nowhere"]?.hasPrefix("Http1 GET /nowhere /nowhere 404 true 0 ") == true, "\(logged)")
        #expect(byPath["/dead"]?.contains(" 502 true 0 ") == true && byPath["/dead"]?.contains(" dead 127.0.0.1:") == true, "\(logged)")
        // The malformed head: a line with the 400 and nothing read from the request.
        #expect(logged.contains { $0.hasPrefix("Http1 - - - 400 true 0 ") }, "\(logged)")
        // MOSN's default format (an empty log_format): start time, ids, durations, addresses.
        let mosn = lines(directory + "/mosn-default.log")
        #expect(mosn.count == 6)
        let proxied = try #require(mosn.first { $0.contains(" 200 ") && $0.hasSuffix("127.0.0.1:\(upstream.port)") })
        let parts = proxied.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        // "2026/11/24 03:39:30.312 -  1 2 101µs 1.274ms 369 0 Http1 200 2.392ms false 200 up-local down-local down-remote host"
        #expect(parts.count == 19, "\(parts)")
        #expect(parts[0].count == 10 && parts[1].count == 12 && ["-", "0a1b2c"].contains(parts[2]) && parts[3] == "")
        // %trace_id%: the request's SOFA-TraceId (MOSN's tracer's id), "-" without one.
        #expect(mosn.filter { $0.contains(" 0a1b2c  ") }.count == 1 && mosn.filter { $0.contains(" -  ") }.count == 5, "\(mosn)")
        #expect(UInt64(parts[4]) != nil && UInt64(parts[5]) != nil)
        #expect(["µs", "ms", "s"].contains { parts[6].hasSuffix($0) } && ["µs", "ms", "s"].contains { parts[7].hasSuffix($0) })
        #expect(parts[10] == "Http1" && parts[11] == "200" && parts[13] == "false" && parts[14] == "200")
        #expect(parts[16] == "127.0.0.1:\(port)" && parts[17].hasPrefix("127.0.0.1:"))
    }

    @Test func sigusr1ReopensTheAccessLogsAndTheDefaultLogAfterRotation() throws {
        let path = directory + "/rotate.log", mainLog = directory + "/tern.log"
        let tern = try TernProcess(config: httpConfig(logPath: path, defaultLog: mainLog, format: "%request_path% %response_code%"), waitFor: [port])
        defer { tern.stop() }
        for i in 0..<3 { #expect(exchange("GET /up/before-\(i) HTTP/1.1\r\nHost: x\r\n\r\n")?.status == 200) }
        #expect(waitUntil(timeout: 5) { self.lines(path).count == 3 })
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        try FileManager.default.moveItem(atPath: mainLog, toPath: mainLog + ".1")
        tern.child.signal(SIGUSR1)
        #expect(waitUntil(timeout: 5) { self.lines(mainLog).contains { $0.contains("SIGUSR1: log files reopened") } })
        for i in 0..<2 { #expect(exchange("GET /up/after-\(i) HTTP/1.1\r\nHost: x\r\n\r\n")?.status == 200) }
        #expect(waitUntil(timeout: 5) { self.lines(path).count == 2 }, "\(lines(path))")
        // Sorted: each worker hands its lines over in its own batches.
        #expect(lines(path).sorted() == ["/up/after-0 200", "/up/after-1 200"])
        #expect(lines(path + ".1").sorted() == ["/up/before-0 200", "/up/before-1 200", "/up/before-2 200"])
        #expect(!lines(mainLog + ".1").contains { $0.contains("SIGUSR1") })
    }

    @Test func boltCallsAreLoggedWithTheirStatusAndHeaders() throws {
        let boltPort = freePort()
        let server = try startBoltServer(port: boltPort)
        defer { server.stop() }
        let listen = freePort()
        let path = directory + "/bolt.log"
        let format = "%protocol% %request_header_service% %response_code% %response_flag% %bytes_received% %upstream_cluster% %trace_id%"
        let config = boltConfig(listen: listen, upstream: boltPort)
            .replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \"access_logs\": [{\"log_path\": \"\(path)\", \"log_format\": \"\(format)\"}],")
        let tern = try TernProcess(config: config, waitFor: [listen], extraArguments: ["--workers", "1"])
        defer { tern.stop() }
        let c = try RawClient(port: listen, timeout: 10)
        defer { c.close() }
        c.send(BoltTestFrame.request(id: 1, service: echoService, method: "echo", body: [1, 2, 3]))
        c.send(BoltTestFrame.request(id: 2, service: "org.other.Service:1.0", method: "echo", body: [4]))
        let answers = BoltTestFrame.readResponses(c, 2)
        #expect(answers.count == 2)
        let statusByID = Dictionary(answers.map { ($0.id, $0.status) }, uniquingKeysWith: { a, _ in a })
        #expect(waitUntil(timeout: 5) { self.lines(path).count == 2 }, "\(lines(path))\n\(tern.child.output.suffix(2000))")
        let logged = lines(path)
        #expect(logged.contains("bolt \(echoService) \(statusByID[1] ?? 999) false 3 up -"), "\(logged)")
        // No route: NO_PROCESSOR (6) from Tern itself, flagged.
        #expect(statusByID[2] == 6)
        #expect(logged.contains("bolt org.other.Service:1.0 6 true 1 - -"), "\(logged)")
    }
}
