import Dispatch
import Glibc
import Synchronization

/// The process's access-log files and the thread that writes them (see AccessLog.swift). Workers
/// hand it whole buffers (`submit`); it appends them to the files in the order they came, and
/// reopens every file on `reopen` (SIGUSR1, after logrotate moved them).
public final class AccessLogWriter: Sendable {
    /// Files by index ("stdout" and "stderr" are the process's own streams, never reopened).
    public let paths: [String]
    /// Buffers waiting beyond this are dropped (their lines counted in `droppedLines`).
    public static let maxPendingBytes = 32 << 20

    private struct Chunk { let file: Int; let bytes: [UInt8]; let lines: Int }
    private struct State {
        var queue: [Chunk] = []
        var pendingBytes = 0
        var descriptors: [Int32] = []
        var reopenAsked = false
        var stopping = false
    }
    private let state: Mutex<State>
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    public let droppedLines = Atomic<Int>(0)
    /// Reopens done so far (the main thread waits for the one it asked for, to report failures).
    public let reopensDone = Atomic<Int>(0)
    public let writtenLines = Atomic<Int>(0)
    /// The last error writing or reopening a file, for the log (read by the main thread).
    private let failures = Mutex<[String]>([])

    public enum OpenError: Error, CustomStringConvertible {
        case cannotOpen(path: String, errno: Int32)
        public var description: String {
            switch self {
            case .cannotOpen(let path, let e): return "cannot open access log \(path): \(String(cString: strerror(e)))"
            }
        }
    }

    /// Opens (creates, appends to) every file; throws naming the first that cannot be opened.
    public init(paths: [String]) throws(OpenError) {
        self.paths = paths
        var descriptors: [Int32] = []
        for path in paths {
            let fd = AccessLogWriter.open(path)
            if fd < 0 {
                let e = errno
                for d in descriptors where d > 2 { Glibc.close(d) }
                throw .cannotOpen(path: path, errno: e)
            }
            descriptors.append(fd)
        }
        var initial = State()
        initial.descriptors = descriptors
        state = Mutex(initial)
    }

    static func open(_ path: String) -> Int32 {
        switch path {
        case "stdout": return 1
        case "stderr": return 2
        default: return Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        }
    }

    /// From a worker: queues a buffer of whole lines for `file`. Never blocks on the disk; the lock
    /// is taken once per buffer (32 KB or 100 ms of lines), not per request.
    public func submit(file: Int, bytes: [UInt8], lines: Int) {
        let accepted = state.withLock { s -> Bool in
            guard s.pendingBytes + bytes.count <= AccessLogWriter.maxPendingBytes else { return false }
            s.queue.append(Chunk(file: file, bytes: bytes, lines: lines))
            s.pendingBytes += bytes.count
            return true
        }
        if accepted { wake.signal() } else { droppedLines.add(lines, ordering: .relaxed) }
    }

    /// SIGUSR1: every file is opened again by path (after rotation), before the next buffer is written.
    public func reopen() {
        state.withLock { $0.reopenAsked = true }
        wake.signal()
    }

    /// Errors since the last call (the main thread logs them).
    public func takeFailures() -> [String] { failures.withLock { f in defer { f.removeAll() }; return f } }

    /// The writer thread's body: returns after `finish`.
    public func run() {
        while true {
            wake.wait()
            let (batch, descriptors, reopen, stop) = state.withLock { s in
                defer { s.queue.removeAll(); s.reopenAsked = false }
                return (s.queue, s.descriptors, s.reopenAsked, s.stopping)
            }
            var fds = descriptors
            if reopen {
                fds = reopenFiles(fds)
                reopensDone.add(1, ordering: .releasing)
            }
            var written = 0
            for chunk in batch {
                write(chunk.bytes, to: fds[chunk.file], path: paths[chunk.file])
                written += chunk.bytes.count
                writtenLines.add(chunk.lines, ordering: .relaxed)
            }
            let done = state.withLock { s -> Bool in
                s.pendingBytes -= written
                return s.stopping && s.queue.isEmpty
            }
            if stop && done {
                finished.signal()
                return
            }
        }
    }

    /// Stops the thread once what was submitted before is written; waits at most `timeoutMS`.
    public func finish(timeoutMS: Int) {
        state.withLock { $0.stopping = true }
        wake.signal()
        _ = finished.wait(timeout: .now() + .milliseconds(timeoutMS))
    }

    private func reopenFiles(_ current: [Int32]) -> [Int32] {
        var next = current
        for (i, path) in paths.enumerated() where current[i] > 2 {
            let fd = AccessLogWriter.open(path)
            if fd < 0 {
                let e = errno
                failures.withLock { $0.append("cannot reopen access log \(path): \(String(cString: strerror(e))); writing on to the old file") }
                continue
            }
            Glibc.close(current[i])
            next[i] = fd
        }
        state.withLock { $0.descriptors = next }
        return next
    }

    private func write(_ bytes: [UInt8], to fd: Int32, path: String) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n > 0 { offset += n; continue }
                if n < 0 && errno == EINTR { continue }
                let e = errno
                failures.withLock { $0.append("writing access log \(path) failed: \(String(cString: strerror(e))); \(raw.count - offset) byte(s) lost") }
                return
            }
        }
    }
}

/// One worker's side of the access logs: a buffer per file, filled by its sessions' finished
/// requests and handed to the writer thread when full or 100 ms after its first line.
public final class AccessLogOutput: TimerTarget {
    public let writer: AccessLogWriter
    /// The worker's loop (the worker owns both).
    unowned(unsafe) let loop: EventLoop
    private let buffers: [ByteBuffer]
    private var lines: [Int]
    private var timer: LoopTimer?
    static let flushBytes = 32 * 1024
    static let flushDelayMS: Int64 = 100
    /// `start_time` to the second ("2026/11/24 03:45:12"), made once per second.
    private var cachedSecond: Int64 = -1
    private var wallOffsetUS: Int64 = 0
    private var offsetReadUS: Int64 = Int64.min / 2
    private let cachedTime = ByteBuffer(capacity: 32)
    /// Records of finished bolt calls, reused.
    private var spare: [AccessLogRecord] = []

    public init(writer: AccessLogWriter, loop: EventLoop) {
        self.writer = writer
        self.loop = loop
        buffers = writer.paths.map { _ in ByteBuffer(capacity: AccessLogOutput.flushBytes + 4096) }
        lines = writer.paths.map { _ in 0 }
    }

    public func takeRecord() -> AccessLogRecord { spare.popLast() ?? AccessLogRecord() }
    public func giveBack(_ record: AccessLogRecord) { if spare.count < 256 { spare.append(record) } }

    /// Formats `record` into each of `plan`'s logs and closes it.
    public func write(_ record: AccessLogRecord, plan: AccessLogPlan) {
        if record.endUS == 0 { record.endUS = loop.nowUS }
        for i in 0..<plan.logs.count {
            let log = plan.compiled[i]
            let out = buffers[log.file]
            for j in 0..<log.opCount { field(log.ops[j], log.text, record, plan, out) }
            out.writeByte(10)
            lines[log.file] &+= 1
            if out.readableBytes >= AccessLogOutput.flushBytes { flush(log.file) }
        }
        record.close()
        if timer == nil { timer = LoopTimer(target: self) }
        if !timer!.isArmed { loop.timers.arm(timer!, at: loop.nowMS + AccessLogOutput.flushDelayMS) }
    }

    public func timerFired(_ timer: LoopTimer) { flushAll() }

    /// Hands every non-empty buffer to the writer (the timer, and the worker at exit).
    public func flushAll() {
        for file in buffers.indices where lines[file] > 0 { flush(file) }
    }

    private func flush(_ file: Int) {
        let buffer = buffers[file]
        writer.submit(file: file, bytes: buffer.readableArray(), lines: lines[file])
        buffer.clear()
        buffer.shrinkIfEmpty(to: AccessLogOutput.flushBytes + 4096)
        lines[file] = 0
    }

    // MARK: formatting

    @inline(__always)
    private func field(_ op: AccessLogOp, _ text: UnsafePointer<UInt8>?, _ r: AccessLogRecord, _ plan: AccessLogPlan, _ out: ByteBuffer) {
        switch op.kind {
        case .text:
            // Most literals of a format are one space: no copy call for those.
            if op.count == 1 { out.writeByte(text![Int(op.start)]) } else { out.write(text! + Int(op.start), count: Int(op.count)) }
        case .startTime: appendStartTime(r.startUS, out)
        case .connectionID: AccessLogOutput.write(r.downstreamTexts.id, out)
        case .upstreamConnectionID: AccessLogOutput.write(r.upstreamTexts.id, out)
        case .requestReceivedDuration: AccessLogOutput.goDuration(r.sentUS > 0 ? r.sentUS - r.startUS : 0, out)
        case .responseReceivedDuration: AccessLogOutput.goDuration(r.responseUS > 0 ? r.responseUS - r.startUS : 0, out)
        case .requestFinishedDuration: AccessLogOutput.goDuration(r.endUS - r.startUS, out)
        case .processTimeDuration:
            let toUpstream = r.sentUS > 0 ? r.sentUS - r.startUS : r.endUS - r.startUS
            let back = r.responseUS > 0 ? r.endUS - r.responseUS : 0
            AccessLogOutput.goDuration(toUpstream + back, out)
        case .bytesSent: out.writeDecimal(Int(r.bytesSent))
        case .bytesReceived: out.writeDecimal(Int(r.bytesReceived))
        case .protocolName: out.write(r.protocolName)
        case .responseCode:
            if r.responseCode >= 0 { out.writeDecimal(r.responseCode) } else { out.writeByte(AccessLogOutput.dash) }
        case .responseFlag: out.write(r.flagged ? "true" : "false")
        case .upstreamLocalAddress: AccessLogOutput.write(r.upstreamTexts.local, out)
        case .downstreamLocalAddress: AccessLogOutput.write(r.downstreamTexts.local, out)
        case .downstreamRemoteAddress: AccessLogOutput.write(r.downstreamTexts.remote, out)
        case .upstreamHost: AccessLogOutput.write(r.hostText, out)
        case .upstreamCluster: AccessLogOutput.write(r.clusterText, out)
        case .upstreamTransportFailureReason:
            if let why = r.failureReason { out.write(string: why) } else { out.writeByte(AccessLogOutput.dash) }
        case .listenerName: AccessLogOutput.write(plan.listenerName, out)
        case .captured:
            if let v = r.value(Int(op.start)) { AccessLogOutput.appendEscaped(v.base!, v.count, out) } else { out.writeByte(AccessLogOutput.dash) }
        case .unknown: out.writeByte(AccessLogOutput.dash)
        }
    }

    /// A text, or "-" when there is none.
    @inline(__always)
    static func write(_ t: LogText, _ out: ByteBuffer) {
        if let base = t.base { out.write(base, count: t.count) } else { out.writeByte(dash) }
    }

    static let dash = UInt8(ascii: "-")
    static let hexDigits: StaticString = "0123456789ABCDEF"

    /// A value from the wire, with bytes that could forge or break a line (control characters,
    /// DEL, non-ASCII, the double quote formats put around values) written as \xHH, and the
    /// backslash as \\, as nginx escapes its variables.
    static func appendEscaped(_ base: UnsafePointer<UInt8>, _ count: Int, _ out: ByteBuffer) {
        var plainFrom = 0
        for i in 0..<count {
            let b = base[i]
            guard b < 0x20 || b >= 0x7f || b == UInt8(ascii: "\\") || b == UInt8(ascii: "\"") else { continue }
            out.write(base + plainFrom, count: i - plainFrom)
            plainFrom = i + 1
            if b == UInt8(ascii: "\\") { out.write("\\\\"); continue }
            out.write("\\x")
            out.writeByte(hexDigits.utf8Start[Int(b >> 4)])
            out.writeByte(hexDigits.utf8Start[Int(b & 15)])
        }
        out.write(base + plainFrom, count: count - plainFrom)
    }

    /// "2026/11/24 03:45:12.345" (MOSN's layout; UTC, as every Tern log).
    func appendStartTime(_ monotonicUS: Int64, _ out: ByteBuffer) {
        // Wall time is the loop's monotonic time plus an offset read again once a second (so a
        // clock step shows within a second, and no line pays for a wall-clock read).
        if monotonicUS - offsetReadUS >= 1_000_000 || monotonicUS < offsetReadUS {
            var wall = timespec()
            clock_gettime(CLOCK_REALTIME, &wall)
            let mono = monotonicMicroseconds()
            wallOffsetUS = Int64(wall.tv_sec) * 1_000_000 + Int64(wall.tv_nsec) / 1000 - mono
            offsetReadUS = monotonicUS
        }
        let wallUS = monotonicUS + wallOffsetUS
        let second = wallUS / 1_000_000
        if second != cachedSecond {
            cachedSecond = second
            var t = time_t(second)
            var parts = tm()
            gmtime_r(&t, &parts)
            cachedTime.clear()
            AccessLogOutput.padded(Int(parts.tm_year) + 1900, 4, cachedTime); cachedTime.writeByte(UInt8(ascii: "/"))
            AccessLogOutput.padded(Int(parts.tm_mon) + 1, 2, cachedTime); cachedTime.writeByte(UInt8(ascii: "/"))
            AccessLogOutput.padded(Int(parts.tm_mday), 2, cachedTime); cachedTime.writeByte(32)
            AccessLogOutput.padded(Int(parts.tm_hour), 2, cachedTime); cachedTime.writeByte(UInt8(ascii: ":"))
            AccessLogOutput.padded(Int(parts.tm_min), 2, cachedTime); cachedTime.writeByte(UInt8(ascii: ":"))
            AccessLogOutput.padded(Int(parts.tm_sec), 2, cachedTime)
        }
        out.write(cachedTime.readPointer, count: cachedTime.readableBytes)
        out.writeByte(UInt8(ascii: "."))
        AccessLogOutput.threeDigits(Int(wallUS / 1000 % 1000), out)
    }

    /// 0...999 as exactly three digits.
    @inline(__always)
    static func threeDigits(_ v: Int, _ out: ByteBuffer) {
        out.writeByte(UInt8(truncatingIfNeeded: v / 100) &+ 48)
        out.writeByte(UInt8(truncatingIfNeeded: v / 10 % 10) &+ 48)
        out.writeByte(UInt8(truncatingIfNeeded: v % 10) &+ 48)
    }

    static func padded(_ v: Int, _ width: Int, _ out: ByteBuffer) {
        var limit = 10, digits = 1
        while v >= limit && digits < 19 { limit *= 10; digits += 1 }
        for _ in digits..<max(digits, width) { out.writeByte(UInt8(ascii: "0")) }
        out.writeDecimal(v)
    }

    /// A duration in µs as Go's time.Duration.String() prints it (MOSN's duration variables):
    /// "0s", "850µs", "1.234ms", "2.5s", "1m3.000001s", "1h0m0s".
    static func goDuration(_ us: Int64, _ out: ByteBuffer) {
        let us = Int(max(0, us))
        if us == 0 { out.write("0s"); return }
        if us < 1000 {
            out.writeDecimal(us)
            out.write("µs")
            return
        }
        if us < 1_000_000 {
            out.writeDecimal(us / 1000)
            let micros = us % 1000
            if micros > 0 {
                // ".5", ".25", ".125": three places without their trailing zeros.
                out.writeByte(UInt8(ascii: "."))
                out.writeByte(UInt8(truncatingIfNeeded: micros / 100) &+ 48)
                if micros % 100 != 0 {
                    out.writeByte(UInt8(truncatingIfNeeded: micros / 10 % 10) &+ 48)
                    if micros % 10 != 0 { out.writeByte(UInt8(truncatingIfNeeded: micros % 10) &+ 48) }
                }
            }
            out.write("ms")
            return
        }
        let seconds = us / 1_000_000
        let hours = seconds / 3600, minutes = seconds / 60 % 60
        if hours > 0 { out.writeDecimal(hours); out.writeByte(UInt8(ascii: "h")) }
        if seconds >= 60 { out.writeDecimal(minutes); out.writeByte(UInt8(ascii: "m")) }
        out.writeDecimal(seconds % 60)
        fraction(us % 1_000_000, digits: 6, out)
        out.writeByte(UInt8(ascii: "s"))
    }

    /// ".5", ".25", ".000001": a fraction of `digits` decimal places without trailing zeros.
    private static func fraction(_ value: Int, digits: Int, _ out: ByteBuffer) {
        guard value > 0 else { return }
        var v = value, width = digits
        while v % 10 == 0 { v /= 10; width -= 1 }
        out.writeByte(UInt8(ascii: "."))
        padded(v, width, out)
    }
}
