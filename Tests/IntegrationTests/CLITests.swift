import Foundation
import Glibc
import Testing
import TernTestSupport

/// Runs the real `tern` binary to its exit; (status, stdout and stderr together).
func runTern(_ arguments: [String]) throws -> (Int32?, String) {
    let p = try ChildProcess(TestPaths.ternBinary, arguments, name: "cli")
    defer { p.stop() }
    let status = p.waitForExit(timeout: 10)
    return (status, p.output)
}

func writeTempConfig(_ text: String) throws -> String {
    let path = NSTemporaryDirectory() + "tern-cli-\(UUID().uuidString).json"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

@Suite(.timeLimit(.minutes(2)))
struct CLITests {
    @Test(arguments: ["-h", "--help", "help"])
    func helpPrintsUsageToStdoutAndExitsZero(flag: String) throws {
        // Only stdout goes to the file here, so the usage must be on stdout.
        let out = NSTemporaryDirectory() + "tern-help-\(UUID().uuidString).txt"
        let status = system("\(TestPaths.ternBinary) \(flag) >\(out) 2>/dev/null")
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        #expect(status == 0, "exit status \(status)")
        #expect(text.contains("usage: tern start -c CONFIG"))
        #expect(text.contains("tern validate"))
    }

    @Test func unknownCommandsStillExitTwo() throws {
        let (status, output) = try runTern(["frobnicate"])
        #expect(status == 2)
        #expect(output.contains("usage:"))
    }

    @Test func eachWarningIsPrintedOnceByStart() throws {
        // The log goes to stderr, as the CLI's own warnings do: each warning must appear once.
        let port = freePort()
        let path = try writeTempConfig("""
        { "servers": [{ "default_log_path": "stderr", "default_log_level": "INFO", "processor": 2,
            "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
               "routers": [{ "match": {"prefix": "/"}, "direct_response": {"status": 200, "body": "ok"} }] }] }],
            "listeners": [
              { "name": "a", "address": "127.0.0.1:\(port)", "per_connection_buffer_limit_bytes": 1024,
                "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Auto", "upstream_protocol": "bolt", "router_config_name": "r" } }] }] }] }],
          "tracing": {"enable": true} }
        """)
        let tern = try ChildProcess(TestPaths.ternBinary, ["start", "-c", path], name: "start-once")
        defer { tern.stop() }
        #expect(waitUntil(timeout: 10) { canConnect(port) || !tern.isRunning })
        #expect(waitUntil(timeout: 5) { tern.output.contains("started") })
        tern.signal(SIGTERM)
        #expect(tern.waitForExit(timeout: 10) == 0)
        let output = tern.output
        for key in ["$.tracing", "$.servers[0].listeners[0].per_connection_buffer_limit_bytes"] {
            #expect(output.components(separatedBy: key).count - 1 == 1, "\(key) printed more than once:\n\(output)")
        }
    }

    @Test func eachErrorIsPrintedOnceByValidate() throws {
        let path = try writeTempConfig("""
        { "servers": [{ "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
               "routers": [{ "direct_response": {"status": 200} }] }] }],
            "listeners": [{ "name": "a", "address": "127.0.0.1:1",
                "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Auto", "upstream_protocol": "bolt",
                   "router_config_name": "r", "heartbeat_interval": 5 } }] }] }] }] }
        """)
        let (status, output) = try runTern(["validate", "-c", path])
        #expect(status == 1)
        #expect(output.components(separatedBy: "config.heartbeat_interval:").count - 1 == 1, "\(output)")
    }
}
