import Foundation
import Glibc
import Testing
import TernTestSupport

/// A route regex written to blow up a backtracking engine must cost the worker linear time: the
/// hostile request gets its 404 promptly and the only worker keeps answering other connections.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct RouteRegexTests {
    @Test func catastrophicRouteRegexAnswersPromptlyAndTheWorkerStaysResponsive() throws {
        let port = freePort()
        let config = """
        { "servers": [{ "default_log_path": "stderr", "default_log_level": "WARN",
            "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
               "routers": [
                 { "match": {"regex": "^/r/(a+)+$"}, "direct_response": {"status": 200, "body": "regex"} },
                 { "match": {"path": "/ok"}, "direct_response": {"status": 200, "body": "ok"} } ] }] }],
            "listeners": [{ "name": "l", "address": "127.0.0.1:\(port)", "bind_port": true,
               "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1",
                  "router_config_name": "r" } }] }] }] }] }
        """
        // One worker: a request stuck in the regex would stall every other connection too.
        let tern = try TernProcess(config: config, waitFor: [port], extraArguments: ["--workers", "1"])
        defer { tern.stop() }

        let start = Date()
        let hostile = try RawClient(port: port, timeout: 4)
        hostile.send("GET /r/" + String(repeating: "a", count: 40) + "! HTTP/1.1\r\nHost: x\r\n\r\n")
        let other = try RawClient(port: port, timeout: 4)
        other.send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")

        let otherAnswer = other.readResponses(1)
        #expect(otherAnswer.first?.status == 200 && otherAnswer.first?.bodyText == "ok", "other connection: \(otherAnswer)")
        let hostileAnswer = hostile.readResponses(1)
        #expect(hostileAnswer.first?.status == 404, "hostile request: \(hostileAnswer)")
        let elapsed = Date().timeIntervalSince(start)
        #expect(elapsed < 3, "answers took \(elapsed) s")

        // The regex still routes what it should.
        let matching = try RawClient(port: port, timeout: 4)
        matching.send("GET /r/aaaa HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(matching.readResponses(1).first?.bodyText == "regex")
    }
}
