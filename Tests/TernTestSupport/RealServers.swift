import Foundation
import Glibc
import Synchronization

// Real servers for the L4 tests (redis, PostgreSQL, mosquitto), each started by the test on a port
// of its own and killed by PID like every ChildProcess. `make test` installs them (APT_PACKAGES).

/// Where the peers' programs live on Debian.
public enum PeerPrograms {
    /// `name` on PATH or in the sbin directories (mosquitto is in /usr/sbin, off a user's PATH).
    public static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/local/sbin"]
        return directories.map { $0 + "/" + name }.first { access($0, X_OK) == 0 }
    }

    /// PostgreSQL's own bin directory: Debian puts initdb and postgres in /usr/lib/postgresql/<major>/bin,
    /// off PATH; the newest major that has both wins.
    public static let postgresBin: String? = {
        let base = "/usr/lib/postgresql"
        let majors = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap { Int($0) }.sorted(by: >)
        for major in majors {
            let bin = "\(base)/\(major)/bin"
            if access(bin + "/initdb", X_OK) == 0 && access(bin + "/postgres", X_OK) == 0 { return bin }
        }
        if let initdb = find("initdb") {
            let bin = (initdb as NSString).resolvingSymlinksInPath.split(separator: "/").dropLast().joined(separator: "/")
            if access("/" + bin + "/postgres", X_OK) == 0 { return "/" + bin }
        }
        return nil
    }()

    static func require(_ name: String) throws -> String {
        guard let p = find(name) else { throw TestError("\(name) not found: `make deps` installs it (Makefile APT_PACKAGES)") }
        return p
    }
}

/// A fresh directory under the temporary directory (mkdtemp).
func makeTemporaryDirectory(_ prefix: String) throws -> String {
    var template = Array((NSTemporaryDirectory() + "\(prefix).XXXXXX").utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw TestError("mkdtemp \(prefix): errno \(errno)")
    }
    return String(cString: made)
}

/// A server in a temporary directory of its own, on a probed free port. When another process takes
/// that port between the probe and the server's bind, the server exits and the next attempt probes
/// a new port. Ready means the server's own log line appeared and the port accepts, so a foreign
/// listener on the port never passes for it. The directory goes when the server stops.
public final class ServerProcess: @unchecked Sendable {
    public let port: UInt16
    public let child: ChildProcess
    public let directory: String
    /// Sent first by stop(), for a server that must clean up after itself; SIGKILL after 10 s.
    let shutdownSignal: Int32?

    /// `prepare` runs once in the directory; `command` is the argv for a port and the directory.
    init(_ name: String, readyLine: String, timeout: Double = 10, shutdownSignal: Int32? = nil,
         prepare: (String) throws -> Void = { _ in }, command: (UInt16, String) throws -> [String]) throws {
        self.shutdownSignal = shutdownSignal
        let directory = try makeTemporaryDirectory("tern-\(name)")
        self.directory = directory
        do {
            try prepare(directory)
            var lastOutput = ""
            for _ in 0..<3 {
                let port = freePort()
                let argv = try command(port, directory)
                let child = try ChildProcess(argv[0], Array(argv.dropFirst()), name: name)
                if waitUntil(timeout: timeout, { !child.isRunning || (child.output.contains(readyLine) && canConnect(port)) }), child.isRunning {
                    (self.child, self.port) = (child, port)
                    return
                }
                lastOutput = child.output
                child.stop()
            }
            throw TestError("\(name) did not start: \(lastOutput.suffix(2000))")
        } catch {
            // A class whose init throws never runs its deinit.
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    public func stop() {
        if let shutdownSignal, child.isRunning {
            child.signal(shutdownSignal)
            _ = child.waitForExit(timeout: 10)
        }
        child.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit { stop() }
}

// MARK: redis

/// redis-server on 127.0.0.1 without persistence; `cli` and `benchmark` talk to it or, given a
/// port, to a proxy in front of it.
public final class RedisServer: @unchecked Sendable {
    public let server: ServerProcess
    public var port: UInt16 { server.port }

    public init() throws {
        let program = try PeerPrograms.require("redis-server")
        server = try ServerProcess("redis", readyLine: "Ready to accept connections") { port, directory in
            [program, "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory, "--logfile", ""]
        }
    }

    /// redis-cli with `arguments` against `port` (the server's own by default); stdout and stderr.
    /// `standardInput` is a file redis-cli reads (with `-x`, as the last argument).
    public func cli(_ arguments: [String], port: UInt16? = nil, standardInput: String? = nil, timeout: Double = 30) throws -> (Int32, String) {
        try run(try PeerPrograms.require("redis-cli"), ["-h", "127.0.0.1", "-p", String(port ?? self.port)] + arguments,
                timeout: timeout, standardInput: standardInput, includeStderr: true)
    }

    /// redis-benchmark with `arguments` against `port` (the server's own by default).
    public func benchmark(_ arguments: [String], port: UInt16? = nil, timeout: Double = 60) throws -> (Int32, String) {
        try run(try PeerPrograms.require("redis-benchmark"), ["-h", "127.0.0.1", "-p", String(port ?? self.port)] + arguments,
                timeout: timeout, includeStderr: true)
    }

    public func stop() { server.stop() }
}

// MARK: PostgreSQL

/// One PostgreSQL server per test process (initdb takes about a second), shared by every suite:
/// a temporary data directory, trust authentication, 127.0.0.1 on a free port and its unix socket
/// in the temporary directory. initdb refuses root, so under root it runs as the `postgres`
/// system user the Debian package creates. Durability is off (fsync, synchronous_commit): the data
/// lives only as long as the test process.
public final class PostgresServer: @unchecked Sendable {
    public let server: ServerProcess
    public var port: UInt16 { server.port }
    public var child: ChildProcess { server.child }
    public let user = "postgres"
    let bin: String

    /// The process's one server, started on first use.
    public static func shared() throws -> PostgresServer { try sharedServer.get() }
    private static let sharedServer: Result<PostgresServer, any Error> = Result {
        let postgres = try PostgresServer()
        serverToStopAtExit.withLock { $0 = postgres }
        // Registered after the child reaper (installed by the first ChildProcess), so it runs
        // before it: a fast shutdown removes the server's shared memory, a SIGKILL would leave it.
        atexit { serverToStopAtExit.withLock { $0 }?.stop() }
        return postgres
    }

    private init() throws {
        guard let bin = PeerPrograms.postgresBin else {
            throw TestError("PostgreSQL server programs not found under /usr/lib/postgresql/*/bin: `make deps` installs them")
        }
        self.bin = bin
        // Under root, run as the postgres user (setpriv execs in place: the PID stays the server's).
        var asUser: [String] = [], owner: (uid_t, gid_t)?
        if getuid() == 0 {
            guard let pw = getpwnam("postgres") else { throw TestError("running as root and no `postgres` user to run PostgreSQL as") }
            owner = (pw.pointee.pw_uid, pw.pointee.pw_gid)
            asUser = [try PeerPrograms.require("setpriv"), "--reuid", "postgres", "--regid", "postgres", "--init-groups"]
        }
        let user = self.user
        server = try ServerProcess("pg", readyLine: "database system is ready to accept connections", timeout: 30,
                                   shutdownSignal: SIGINT,   // fast shutdown: it releases its shared memory
                                   prepare: { directory in
            if let (uid, gid) = owner, chown(directory, uid, gid) != 0 { throw TestError("chown \(directory): errno \(errno)") }
            let initdb = asUser + [bin + "/initdb", "-D", directory + "/data", "-U", user, "-A", "trust", "-E", "UTF8", "--locale=C",
                                   "--no-sync", "--no-instructions"]
            let (status, output) = try run(initdb[0], Array(initdb.dropFirst()), timeout: 60, includeStderr: true)
            guard status == 0 else { throw TestError("initdb exited \(status): \(output.suffix(2000))") }
        }) { port, directory in
            asUser + [bin + "/postgres", "-D", directory + "/data", "-p", String(port), "-k", directory,
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                // Dynamic shared memory in files under the data directory, so nothing outlives it.
                "-c", "dynamic_shared_memory_type=mmap", "-c", "max_connections=50"]
        }
    }

    /// psql running each of `statements` (one -c each, so each prints its result) against `port`
    /// (the server's own by default) over TCP, unaligned and tuples only: rows as `a|b` lines.
    /// Stops at the first error (exit 3) and reports it in the output.
    public func psql(_ statements: [String], port: UInt16? = nil, database: String = "postgres", timeout: Double = 30) throws -> (Int32, String) {
        let arguments = ["-h", "127.0.0.1", "-p", String(port ?? self.port), "-U", user, "-d", database,
                         "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"] + statements.flatMap { ["-c", $0] }
        return try run(bin + "/psql", arguments, timeout: timeout, includeStderr: true)
    }

    /// pgbench with `arguments` against `port` (the server's own by default).
    public func pgbench(_ arguments: [String], port: UInt16? = nil, database: String, timeout: Double = 60) throws -> (Int32, String) {
        try run(bin + "/pgbench", ["-h", "127.0.0.1", "-p", String(port ?? self.port), "-U", user] + arguments + [database],
                timeout: timeout, includeStderr: true)
    }

    /// pgbench's "number of transactions actually processed: 800/800" as (800, 800).
    public static func transactionsProcessed(_ pgbenchOutput: String) -> (processed: Int, planned: Int)? {
        let mark = "number of transactions actually processed: "
        guard let line = pgbenchOutput.split(separator: "\n").first(where: { $0.hasPrefix(mark) }) else { return nil }
        let counts = line.dropFirst(mark.count).split(separator: "/").compactMap { Int($0) }
        return counts.count == 2 ? (counts[0], counts[1]) : nil
    }

    /// A new empty database named `prefix` plus a unique suffix, so suites sharing the server
    /// never see each other's tables.
    public func createDatabase(_ prefix: String) throws -> String {
        let name = "\(prefix)_\(UInt32.random(in: 0...UInt32.max))"
        let (status, output) = try psql(["CREATE DATABASE \(name)"])
        guard status == 0 else { throw TestError("CREATE DATABASE \(name): \(output)") }
        return name
    }

    public func stop() { server.stop() }
}

private let serverToStopAtExit = Mutex<PostgresServer?>(nil)

// MARK: mosquitto

/// A mosquitto MQTT broker on 127.0.0.1, anonymous, without persistence.
public final class MosquittoBroker: @unchecked Sendable {
    public let server: ServerProcess
    public var port: UInt16 { server.port }

    public init() throws {
        let program = try PeerPrograms.require("mosquitto")
        server = try ServerProcess("mqtt", readyLine: " running") { port, directory in
            // Log to stderr: mosquitto buffers its stdout when that is a file, so the ready line
            // would appear only at exit.
            let config = directory + "/mosquitto-\(port).conf"
            try "listener \(port) 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
                .write(toFile: config, atomically: true, encoding: .utf8)
            return [program, "-c", config]
        }
    }

    public func stop() { server.stop() }
}

/// mosquitto_sub that has subscribed (its SUBACK arrived) and exits after `count` messages.
public final class MQTTSubscriber: @unchecked Sendable {
    public let child: ChildProcess
    static let messageMark = "MSG "

    public init(port: UInt16, topic: String, count: Int, qos: Int = 1, timeout: Double = 30) throws {
        // -d prints the protocol exchange (SUBACK tells it is subscribed); -F marks message lines
        // apart from those debug lines. stdbuf makes its stdout line-buffered (it is a file here),
        // and execs in place: the PID stays mosquitto_sub's.
        child = try ChildProcess(try PeerPrograms.require("stdbuf"),
            ["-oL", try PeerPrograms.require("mosquitto_sub"), "-h", "127.0.0.1", "-p", String(port), "-t", topic, "-q", String(qos), "-C", String(count),
             "-W", String(Int(timeout.rounded(.up))), "-d", "-F", MQTTSubscriber.messageMark + "%p"], name: "mosquitto-sub")
        guard waitUntil(timeout: 10, { child.output.contains("Subscribed (mid") || !child.isRunning }), child.isRunning else {
            child.stop()
            throw TestError("mosquitto_sub did not subscribe: \(child.output.suffix(2000))")
        }
    }

    /// The payloads received, in order, once the subscriber has exited (nil if it has not within
    /// `timeout` seconds), with its exit status.
    public func messages(timeout: Double) -> (status: Int32, payloads: [String])? {
        guard let status = child.waitForExit(timeout: timeout) else { return nil }
        let payloads = child.output.split(separator: "\n").filter { $0.hasPrefix(MQTTSubscriber.messageMark) }
            .map { String($0.dropFirst(MQTTSubscriber.messageMark.count)) }
        return (status, payloads)
    }

    public var output: String { child.output }

    public func stop() { child.stop() }
}

/// Publishes `payloads` in order over one connection (mosquitto_pub -l, a message per line).
public func mqttPublish(port: UInt16, topic: String, payloads: [String], qos: Int = 1, timeout: Double = 30) throws -> (Int32, String) {
    let input = NSTemporaryDirectory() + "tern-mqtt-payloads-\(UUID().uuidString)"
    try payloads.joined(separator: "\n").appending("\n").write(toFile: input, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(atPath: input) }
    return try run(try PeerPrograms.require("mosquitto_pub"),
                   ["-h", "127.0.0.1", "-p", String(port), "-t", topic, "-q", String(qos), "-l"],
                   timeout: timeout, standardInput: input, includeStderr: true)
}
