import Glibc

public enum LogLevel: Int, Sendable, Comparable {
    case fatal = 0, error, warn, info, debug, trace
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
    public static func parse(_ s: String) -> LogLevel? {
        switch s.uppercased() {
        case "FATAL": return .fatal
        case "ERROR": return .error
        case "WARN", "WARNING": return .warn
        case "INFO": return .info
        case "DEBUG": return .debug
        case "TRACE": return .trace
        default: return nil
        }
    }
    var label: String {
        switch self {
        case .fatal: return "FATAL"
        case .error: return "ERROR"
        case .warn: return "WARN"
        case .info: return "INFO"
        case .debug: return "DEBUG"
        case .trace: return "TRACE"
        }
    }
}

/// MOSN-style log lines (`2026-11-22 10:00:00,123 [ERROR] [proxy] ...`) written with one write(2)
/// each, so lines from several workers never interleave.
public final class Logger: Sendable {
    public let level: LogLevel
    private let fd: Int32

    public init(level: LogLevel, fd: Int32) {
        self.level = level
        self.fd = fd
    }

    /// Opens `path` ("stdout", "stderr" or a file, appended); nil when the file cannot be opened.
    public static func open(path: String?, level: LogLevel) -> Logger? {
        switch path ?? "" {
        case "", "stderr": return Logger(level: level, fd: 2)
        case "stdout": return Logger(level: level, fd: 1)
        case let file:
            let fd = Glibc.open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            return fd >= 0 ? Logger(level: level, fd: fd) : nil
        }
    }

    /// Whether lines go to standard error, where the CLI prints its own messages too.
    public var writesToStandardError: Bool { fd == 2 }

    @inline(__always) public func enabled(_ l: LogLevel) -> Bool { l <= level }

    public func log(_ l: LogLevel, _ scope: StaticString, _ message: @autoclosure () -> String) {
        guard l <= level else { return }
        var line = Logger.timestamp() + " [" + l.label + "] [" + scope.description + "] " + message()
        line.append("\n")
        line.withUTF8 { _ = Glibc.write(fd, $0.baseAddress, $0.count) }
    }

    public func error(_ scope: StaticString, _ m: @autoclosure () -> String) { log(.error, scope, m()) }
    public func warn(_ scope: StaticString, _ m: @autoclosure () -> String) { log(.warn, scope, m()) }
    public func info(_ scope: StaticString, _ m: @autoclosure () -> String) { log(.info, scope, m()) }
    public func debug(_ scope: StaticString, _ m: @autoclosure () -> String) { log(.debug, scope, m()) }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var parts = tm()
        gmtime_r(&t, &parts)
        func pad(_ v: Int32, _ w: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2)) " +
            "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)),\(pad(Int32(ts.tv_nsec / 1_000_000), 3))"
    }
}
