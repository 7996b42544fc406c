import Glibc
import Synchronization

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
    public var label: String {
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
///
/// The level can change while workers log (the admin API's update_loglevel, enable_log,
/// disable_log): every log call reads one relaxed atomic, no lock, so a change reaches every
/// worker on its next line.
public final class Logger: Sendable {
    /// Where lines go, as configured (`default_log_path`; "stderr" when unset): the name the
    /// admin API addresses this log by, as MOSN's does.
    public let path: String
    private let fd: Int32
    /// The level lines are written at, -1 while the log is disabled.
    private let threshold: Atomic<Int>
    private let chosenLevel: Atomic<Int>
    private let disabledFlag = Atomic<Bool>(false)

    public init(level: LogLevel, fd: Int32, path: String = "stderr") {
        self.path = path
        self.fd = fd
        threshold = Atomic(level.rawValue)
        chosenLevel = Atomic(level.rawValue)
    }

    /// Opens `path` ("stdout", "stderr" or a file, appended); nil when the file cannot be opened.
    public static func open(path: String?, level: LogLevel) -> Logger? {
        switch path ?? "" {
        case "", "stderr": return Logger(level: level, fd: 2, path: "stderr")
        case "stdout": return Logger(level: level, fd: 1, path: "stdout")
        case let file:
            let fd = Glibc.open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            return fd >= 0 ? Logger(level: level, fd: fd, path: file) : nil
        }
    }

    /// SIGUSR1 (log rotation): the file is opened again by its path and takes the place of the old
    /// descriptor (dup2), so a thread writing at that moment writes whole lines to one file or the
    /// other, never to a closed descriptor. stdout and stderr stay. Returns an error to log, if any.
    public func reopen() -> String? {
        guard fd > 2 else { return nil }
        let fresh = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fresh >= 0 else { return "cannot reopen \(path): \(String(cString: strerror(errno))); writing on to the old file" }
        defer { Glibc.close(fresh) }
        guard dup2(fresh, fd) >= 0 else { return "cannot reopen \(path): \(String(cString: strerror(errno)))" }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return nil
    }

    /// Whether lines go to standard error, where the CLI prints its own messages too.
    public var writesToStandardError: Bool { fd == 2 }

    /// The level set (by config, `-l`, or the admin API), whether or not the log is disabled.
    public var level: LogLevel { LogLevel(rawValue: chosenLevel.load(ordering: .relaxed)) ?? .info }
    public var isDisabled: Bool { disabledFlag.load(ordering: .relaxed) }

    /// Changes the level every thread logs at from its next line on.
    public func setLevel(_ l: LogLevel) {
        chosenLevel.store(l.rawValue, ordering: .relaxed)
        updateThreshold()
    }

    /// Stops (true) or resumes (false) writing lines at all, keeping the level.
    public func setDisabled(_ disabled: Bool) {
        disabledFlag.store(disabled, ordering: .relaxed)
        updateThreshold()
    }

    private func updateThreshold() {
        threshold.store(disabledFlag.load(ordering: .relaxed) ? -1 : chosenLevel.load(ordering: .relaxed), ordering: .relaxed)
    }

    @inline(__always) public func enabled(_ l: LogLevel) -> Bool { l.rawValue <= threshold.load(ordering: .relaxed) }

    public func log(_ l: LogLevel, _ scope: StaticString, _ message: @autoclosure () -> String) {
        guard enabled(l) else { return }
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
