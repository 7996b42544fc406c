import Foundation
import Glibc

/// A fresh directory for one test's unix socket paths, short enough for sun_path (107 bytes),
/// removed with everything in it by `remove()`.
public final class UnixTempDirectory: @unchecked Sendable {
    public let path: String

    public init() throws {
        var template = Array("/tmp/tern-uds-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TestError("mkdtemp failed: errno \(errno)")
        }
        path = String(cString: made)
    }

    public func file(_ name: String) -> String { path + "/" + name }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Whether `path` is a socket file (lstat, not following links).
public func isSocketFile(_ path: String) -> Bool {
    var info = stat()
    return lstat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK
}

/// A unix stream socket connected to `path` ("@name": an abstract socket), or -1 (built here,
/// apart from Tern's own sockaddr code).
public func connectUnix(_ path: String) -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return -1 }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    // An abstract name is a NUL then the name, and the length counts exactly those bytes.
    let abstract = path.hasPrefix("@")
    let bytes = abstract ? [0] + Array(path.utf8.dropFirst()) : Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { close(fd); return -1 }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
    let length = abstract ? MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count : MemoryLayout<sockaddr_un>.size
    let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(length)) }
    }
    if rc != 0 { close(fd); return -1 }
    return fd
}

public func canConnect(unixPath path: String) -> Bool {
    let fd = connectUnix(path)
    if fd < 0 { return false }
    close(fd)
    return true
}

/// Leaves a stale socket file at `path`: bound, never listened on, closed, not unlinked (what a
/// process that died leaves behind).
public func makeStaleSocketFile(_ path: String) throws {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
    let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard rc == 0 else { throw TestError("bind \(path): errno \(errno)") }
}

/// The HTTP upstream on a unix socket in Tests/IntegrationTests/peers/unix_upstream.py.
public final class PythonUnixUpstream: @unchecked Sendable {
    public let child: ChildProcess
    public let path: String

    public init(path: String) throws {
        self.path = path
        let child = try ChildProcess("/usr/bin/env", ["python3", "-u", TestPaths.peers + "/unix_upstream.py", path], name: "unix-upstream")
        self.child = child
        guard waitUntil(timeout: 10, { canConnect(unixPath: path) || !child.isRunning }), child.isRunning else {
            throw TestError("unix upstream did not start: \(child.output)")
        }
    }

    public func stop() { child.stop() }
}

extension TernProcess {
    /// `tern start` on `config`, polled until it accepts on every unix path and TCP port given.
    public convenience init(config: String, waitForUnixPaths paths: [String], ports: [UInt16] = [], extraArguments: [String] = []) throws {
        try self.init(config: config, waitFor: ports, extraArguments: extraArguments)
        for p in paths {
            guard waitUntil(timeout: 10, { canConnect(unixPath: p) || !child.isRunning }), child.isRunning else {
                stop()
                throw TestError("tern did not listen on \(p): \(child.output)")
            }
        }
    }
}

/// curl through a unix socket (`--unix-socket`, or `--abstract-unix-socket` for "@name"), one
/// connection for all `urls` (kept alive): curl's exit status and the bodies.
public func curlUnix(_ path: String, _ urls: String...) throws -> (status: Int32, body: String) {
    let socket = path.hasPrefix("@") ? ["--abstract-unix-socket", String(path.dropFirst())] : ["--unix-socket", path]
    return try run("/usr/bin/curl", ["-s", "--max-time", "10"] + socket + urls)
}
