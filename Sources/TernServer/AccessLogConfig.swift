import Glibc
import TernCore

/// The process's access-log files by path, numbered in the order listeners name them (one writer
/// file each, however many listeners share it).
final class AccessLogFiles {
    private(set) var paths: [String] = []
    func index(of path: String) -> Int {
        if let i = paths.firstIndex(of: path) { return i }
        paths.append(path)
        return paths.count - 1
    }
}

extension ConfigCompiler {
    /// A listener's `access_logs: [{log_path, log_format}]`; nil when it has none. An empty
    /// `log_format` is MOSN's default format; an unknown `%variable%` is written "-" (as MOSN) with
    /// a warning; a malformed format or a path whose directory does not exist is an error.
    func compileAccessLogs(_ l: JSONObject, listenerName: String) -> AccessLogPlan? {
        let entries = l.objects("access_logs")
        guard !entries.isEmpty else { return nil }
        var captures = AccessLogCaptures()
        var specs: [AccessLogSpec] = []
        for e in entries {
            e.checkKeys(known: ["log_path", "log_format"])
            guard let path = e.requiredString("log_path") else { continue }
            if path.isEmpty { diagnostics.error(e.sub("log_path"), "must name a file (or stdout, stderr)"); continue }
            if path != "stdout" && path != "stderr", let problem = Self.directoryProblem(path) {
                diagnostics.error(e.sub("log_path"), problem)
                continue
            }
            do {
                let format = try AccessLogFormat.parse(e.string("log_format") ?? "", captures: &captures)
                for name in format.unknownNames {
                    diagnostics.warn(e.sub("log_format"), "%\(name)% is a variable neither Tern nor MOSN defines; written as \"-\"")
                }
                specs.append(AccessLogSpec(file: accessLogFiles.index(of: path), format: format))
            } catch {
                diagnostics.error(e.sub("log_format"), error.description)
            }
        }
        return specs.isEmpty ? nil : AccessLogPlan(logs: specs, captures: captures, listenerName: listenerName)
    }

    /// Why a log file at `path` could not be created, judged by its directory; nil when it can.
    static func directoryProblem(_ path: String) -> String? {
        let directory: String
        if let slash = path.lastIndex(of: "/") { directory = slash == path.startIndex ? "/" : String(path[..<slash]) } else { directory = "." }
        var info = stat()
        guard stat(directory, &info) == 0 else { return "directory \(directory) of \(path): \(String(cString: strerror(errno)))" }
        guard info.st_mode & S_IFMT == S_IFDIR else { return "\(directory) (for \(path)) is not a directory" }
        return nil
    }
}
