import CTernShim
import Glibc

/// Something registered with an event loop for readiness of one file descriptor.
public protocol EventHandler: AnyObject {
    func handleEvents(_ events: UInt32)
}

/// Readiness bits as delivered by epoll.
public enum Readiness {
    public static let readable: UInt32 = 0x001
    public static let writable: UInt32 = 0x004
    public static let error: UInt32 = 0x008
    public static let hangup: UInt32 = 0x010
    public static let readHangup: UInt32 = 0x2000
    public static let edgeTriggered: UInt32 = 1 << 31
    /// Registered once per socket and never re-armed: edge-triggered read and write.
    public static let socketInterest = readable | writable | readHangup | edgeTriggered
}

/// One epoll loop owned by one thread. Every object that registers with it (connections, listeners,
/// timers, pools) is confined to that thread; the only way in from elsewhere is `execute`.
public final class EventLoop {
    private let epollFD: Int32
    private var handlers: [EventHandler?] = []
    public let timers = TimerHeap()
    private let tasks: TaskQueue
    private var events = [tern_event](repeating: tern_event(), count: 256)
    public private(set) var running = false
    /// Cached monotonic milliseconds, refreshed once per wake-up.
    public private(set) var nowMS: Int64 = tern_monotonic_ms()
    /// Connections with output queued during this batch of events: written once, after the batch,
    /// so many responses for one socket leave in one write.
    private var pendingFlush: [Connection] = []

    public init() {
        epollFD = tern_epoll_create()
        precondition(epollFD >= 0, "epoll_create1 failed: errno \(errno)")
        tasks = TaskQueue()
        register(fd: tasks.eventFD, handler: tasks, events: Readiness.readable)
    }

    deinit { close(epollFD) }

    /// A handle other threads may use to run work on this loop.
    public var remote: TaskQueue { tasks }

    public func register(fd: Int32, handler: EventHandler, events: UInt32 = Readiness.socketInterest) {
        let index = Int(fd)
        if index >= handlers.count { handlers.append(contentsOf: repeatElement(nil, count: index + 64 - handlers.count)) }
        handlers[index] = handler
        if tern_epoll_add(epollFD, fd, events, UInt64(index)) != 0 {
            handlers[index] = nil
        }
    }

    public func modify(fd: Int32, events: UInt32) {
        _ = tern_epoll_mod(epollFD, fd, events, UInt64(fd))
    }

    public func unregister(fd: Int32) {
        let index = Int(fd)
        if index < handlers.count { handlers[index] = nil }
        _ = tern_epoll_del(epollFD, fd)
    }

    public func updateClock() { nowMS = tern_monotonic_ms() }

    /// Runs until `stop()` is called from this loop's thread.
    public func run() {
        running = true
        while running {
            let timeout = timers.millisecondsUntilNext(now: nowMS)
            let n = events.withUnsafeMutableBufferPointer { tern_epoll_wait(epollFD, $0.baseAddress, 256, timeout) }
            nowMS = tern_monotonic_ms()
            if n > 0 {
                for i in 0..<Int(n) {
                    let index = Int(events[i].data)
                    if index < handlers.count, let handler = handlers[index] {
                        handler.handleEvents(events[i].events)
                    }
                }
            }
            timers.fireDue(now: nowMS)
            flushPending()
        }
    }

    public func stop() { running = false }

    /// Queues `connection` to be flushed after the current batch of events.
    public func flushLater(_ connection: Connection) {
        if connection.flushScheduled { return }
        connection.flushScheduled = true
        pendingFlush.append(connection)
    }

    private func flushPending() {
        var i = 0
        while i < pendingFlush.count {   // a flush may queue more
            let c = pendingFlush[i]
            c.flushScheduled = false
            c.flush()
            i += 1
        }
        pendingFlush.removeAll(keepingCapacity: true)
    }
}
