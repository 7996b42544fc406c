import CTernShim
import Glibc
import Synchronization
import TernCore

/// MOSN-style hot upgrade: a running Tern listens on `<uds_dir>/listen.sock`; a second
/// `tern start` whose config names the same directory connects there, receives every listening
/// socket (SCM_RIGHTS), starts its workers on them (the kernel's accept queues are shared, so no
/// connection waiting in them is lost), and says so; the old process then gives up the upgrade
/// socket, stops accepting and drains as on SIGTERM (finishing requests in flight within
/// `graceful_timeout`), without removing the unix listeners' socket files the new process now owns.
/// A new process that fails before saying so leaves the old one serving.
///
/// The conversation, one byte per message so a descriptor never rides with the wrong byte:
/// old → new `F` + a descriptor, once per listening socket, then `E`; new → old `R` (running on
/// them); old → new `B` (the upgrade socket is free: bind your own); then, while the old process
/// drains, old → new `C` + a client connection's descriptor, followed by the listener's name and
/// the bytes read from it and not yet used (two little-endian UInt32 lengths, then both), for each
/// plain-text connection with nothing in flight (bolt: no caller ever sees its connection close).
/// The channel closes when the old process exits.
public enum HotUpgrade {
    static let socketName = "listen.sock"
    /// How long each side waits for the other's next message.
    static let stepTimeoutMS: Int32 = 15_000

    /// The directory when the config names none: one per user and config file, so unrelated
    /// Terns on a host never take each other's listeners.
    public static func defaultDirectory(configPath: String) -> String {
        var resolved = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let path = realpath(configPath, &resolved) != nil ? String(cString: resolved) : configPath
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in path.utf8 { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
        let low = String(hash, radix: 16)
        return "/tmp/tern-\(getuid())-" + String(repeating: "0", count: 16 - low.count) + low
    }

    static func socketAddress(_ directory: String) -> SocketAddress? {
        try? SocketAddress.unix(path: directory + "/" + socketName)
    }

    /// Reads one byte (and a descriptor riding with it) within `timeoutMS`; nil on end, error or timeout.
    static func receive(_ fd: Int32, timeoutMS: Int32 = stepTimeoutMS) -> (byte: UInt8, descriptor: Int32)? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, timeoutMS) == 1 else { return nil }
        var byte: UInt8 = 0
        var descriptor: Int32 = -1
        guard tern_recv_fd(fd, &byte, 1, &descriptor) == 1 else {
            if descriptor >= 0 { close(descriptor) }
            return nil
        }
        return (byte, descriptor)
    }

    /// Writes all of `bytes` (a blocking socket).
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { if n < 0 && errno == EINTR { continue }; return false }
            offset += n
        }
        return true
    }

    /// Reads exactly `count` bytes, each wait bounded; nil on end, error or timeout.
    static func readExact(_ fd: Int32, _ count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, stepTimeoutMS) == 1 else { return nil }
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + offset, count - offset, 0) }
            if n <= 0 { if n < 0 && errno == EINTR { continue }; return nil }
            offset += n
        }
        return out
    }

    static func send(_ fd: Int32, _ byte: UInt8, descriptor: Int32 = -1) -> Bool {
        var b = byte
        return tern_send_fd(fd, descriptor, &b, 1) == 0
    }

    /// New process: the listening sockets of the Tern running on `directory`, or nil when none
    /// runs there (a first start). Throws when one answers but the hand-over breaks off.
    public static func inherit(from directory: String, logger: Logger) throws(UpgradeError) -> InheritedListeners? {
        guard let address = socketAddress(directory) else { throw UpgradeError("uds_dir \(directory): not a usable socket path") }
        // Listening sockets are only taken from a directory of this user's that nobody else may
        // write, from a process of this user's (another user's socket there could hand us its own).
        var info = stat()
        if lstat(directory, &info) != 0 { return nil }
        guard info.st_mode & S_IFMT == S_IFDIR, info.st_uid == getuid(), info.st_mode & 0o022 == 0 else {
            throw UpgradeError("uds_dir \(directory) is not a directory of this user that only it may write; not taking anything over from it")
        }
        let fd = tern_socket_stream(AF_UNIX)
        guard fd >= 0 else { throw UpgradeError("socket: \(String(cString: strerror(errno)))") }
        // Blocking from here on: this runs before anything else starts.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        guard address.withSockAddr({ connect(fd, $0, $1) }) == 0 else {
            close(fd)
            return nil   // no socket, or a stale one: nobody to take over from
        }
        guard tern_peer_uid(fd) == Int(getuid()) else {
            close(fd)
            throw UpgradeError("the process on \(directory)/\(socketName) runs as another user; not taking anything over from it")
        }
        var sockets: [(address: SocketAddress, fd: Int32)] = []
        while true {
            guard let (byte, descriptor) = receive(fd) else {
                for s in sockets { close(s.fd) }
                close(fd)
                throw UpgradeError("the running Tern on \(directory) broke off the hand-over")
            }
            if byte == UInt8(ascii: "E") { break }
            guard byte == UInt8(ascii: "F"), descriptor >= 0, let local = SocketAddress.local(of: descriptor) else {
                if descriptor >= 0 { close(descriptor) }
                continue
            }
            sockets.append((local, descriptor))
        }
        logger.info("upgrade", "took over \(sockets.count) listening socket(s) from the Tern running on \(directory)")
        return InheritedListeners(channel: fd, sockets: sockets, directory: directory)
    }
}

public struct UpgradeError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The sockets a new process took over, claimed listener by listener while it starts.
public final class InheritedListeners: Sendable {
    let channel: Int32
    let directory: String
    private let unclaimed: Mutex<[(address: SocketAddress, fd: Int32)]>

    init(channel: Int32, sockets: [(address: SocketAddress, fd: Int32)], directory: String) {
        self.channel = channel
        self.directory = directory
        unclaimed = Mutex(sockets)
    }

    /// Every inherited socket listening on `address` (one per old worker for TCP), now the caller's.
    func take(_ address: SocketAddress) -> [Int32] {
        unclaimed.withLock { list in
            let mine = list.filter { $0.address == address }.map(\.fd)
            list.removeAll { $0.address == address }
            return mine
        }
    }

    func has(_ address: SocketAddress) -> Bool { unclaimed.withLock { $0.contains { $0.address == address } } }

    /// Tells the old process this one runs, waits for it to let go of the upgrade socket, and
    /// closes the sockets of listeners the new config no longer has. The channel stays open for
    /// the connections the old process hands over while it drains (`Server.adoptConnections`).
    public func confirm() -> Bool {
        for s in unclaimed.withLock({ list -> [(address: SocketAddress, fd: Int32)] in defer { list.removeAll() }; return list }) { close(s.fd) }
        guard HotUpgrade.send(channel, UInt8(ascii: "R")) else { return false }
        return HotUpgrade.receive(channel)?.byte == UInt8(ascii: "B")
    }

    /// Start failed: the old process keeps serving (it sees the channel close without `R`).
    public func abandon() {
        for s in unclaimed.withLock({ $0 }) { close(s.fd) }
        close(channel)
    }
}

/// Old process side: waits on `<uds_dir>/listen.sock` for a new Tern and hands it the sockets.
final class UpgradeService: Sendable {
    let socket: UnixListenSocket
    let directory: String
    unowned let server: Server

    private init(socket: UnixListenSocket, directory: String, server: Server) {
        self.socket = socket
        self.directory = directory
        self.server = server
    }

    /// Binds the upgrade socket and starts its thread; nil (logged) when it cannot.
    @discardableResult
    static func start(directory: String, server: Server, logger: Logger) -> UpgradeService? {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            logger.warn("upgrade", "cannot create uds_dir \(directory): \(String(cString: strerror(errno))); hot upgrade is off")
            return nil
        }
        var info = stat()
        guard lstat(directory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == getuid(), info.st_mode & 0o022 == 0 else {
            logger.warn("upgrade", "uds_dir \(directory) is not a directory of this user that only it may write; hot upgrade is off")
            return nil
        }
        guard let address = HotUpgrade.socketAddress(directory) else { return nil }
        let socket: UnixListenSocket
        do { socket = try UnixListenSocket.open(address, backlog: 4) } catch {
            logger.warn("upgrade", "cannot listen on \(address): \(error); hot upgrade is off")
            return nil
        }
        let service = UpgradeService(socket: socket, directory: directory, server: server)
        server.upgradeService.withLock { $0 = service }
        startThread(name: "tern-upgrade") { service.run(logger: logger) }
        logger.info("upgrade", "a new `tern start` with uds_dir \(directory) takes over from this process (\(address))")
        return service
    }

    /// Exit: the socket file goes, and the directory when nothing else is in it.
    func stop() {
        socket.release()
        rmdir(directory)
    }

    private func run(logger: Logger) {
        while true {
            var p = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 1000)
            if server.handedOff.load(ordering: .relaxed) || server.draining.load(ordering: .relaxed) { return }
            guard ready == 1 else { continue }
            let client = tern_accept4(socket.fd)
            guard client >= 0 else { continue }
            if handOver(to: client, logger: logger) { return }
        }
    }

    /// One new process: true when it took over (this process then drains and exits, handing it
    /// idle plain connections over the same channel).
    private func handOver(to client: Int32, logger: Logger) -> Bool {
        var keepChannel = false
        defer { if !keepChannel { close(client) } }
        if server.draining.load(ordering: .relaxed) {
            logger.warn("upgrade", "a new process asked to take over while this one drains; refused")
            return false
        }
        guard tern_peer_uid(client) == Int(getuid()) else {
            logger.warn("upgrade", "a process of another user asked to take over; refused")
            return false
        }
        let descriptors = server.handOverDescriptors()
        for fd in descriptors where !HotUpgrade.send(client, UInt8(ascii: "F"), descriptor: fd) {
            logger.error("upgrade", "sending a listening socket failed: \(String(cString: strerror(errno))); serving on")
            return false
        }
        guard HotUpgrade.send(client, UInt8(ascii: "E")) else { return false }
        logger.info("upgrade", "handed \(descriptors.count) listening socket(s) to a new process; waiting for it to start")
        guard HotUpgrade.receive(client)?.byte == UInt8(ascii: "R") else {
            logger.error("upgrade", "the new process did not start; this one serves on")
            return false
        }
        server.handedOff.store(true, ordering: .relaxed)
        socket.release()   // the new process binds the path next (the directory stays)
        if HotUpgrade.send(client, UInt8(ascii: "B")) {
            var limit = timeval(tv_sec: 2, tv_usec: 0)   // a stuck successor costs a draining worker 2 s at most
            setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            _ = fcntl(client, F_SETFL, fcntl(client, F_GETFL) & ~O_NONBLOCK)
            server.successor.withLock { $0 = client }
            keepChannel = true
        }
        logger.info("upgrade", "the new process runs; this one stops accepting and drains (graceful_timeout \(server.plan.drainTimeoutMS) ms)")
        kill(getpid(), SIGTERM)
        return true
    }
}

extension Server {
    /// Listens for a later hot upgrade on `<directory>/listen.sock` (logged when it cannot).
    public func acceptUpgrades(directory: String) {
        UpgradeService.start(directory: directory, server: self, logger: logger)
    }
}

// MARK: connections handed over while the old process drains

extension Server {
    /// Old process, draining for a successor: lets every worker move its idle plain-text
    /// connections over the channel instead of closing them (before the drain tasks run).
    func installHandOff() {
        guard successor.withLock({ $0 }) >= 0 else { return }
        let plain = Set(plan.listeners.filter { $0.tls == nil && $0.serverNameRouting == nil && $0.capture == nil }.map(\.name))
        for q in remoteQueues {
            q.execute { [self] in
                WorkerRegistry.worker(on: q)?.handOff = { [self] connection, listenerName in
                    guard plain.contains(listenerName) else { return false }
                    return transfer(connection, listenerName: listenerName)
                }
            }
        }
    }

    /// Moves one connection to the successor (true: it is gone from this process either way).
    func transfer(_ connection: Connection, listenerName: String) -> Bool {
        guard let (fd, unread) = connection.releaseForHandOff() else { return false }
        defer { close(fd) }   // the successor holds its own copy now (or the client sees a close)
        let name = Array(listenerName.utf8)
        var message = [UInt8]()
        message.reserveCapacity(8 + name.count + unread.count)
        for length in [UInt32(name.count), UInt32(unread.count)] { withUnsafeBytes(of: length.littleEndian) { message += $0 } }
        message += name
        message += unread
        successor.withLock { channel in
            guard channel >= 0 else { return }
            if !HotUpgrade.send(channel, UInt8(ascii: "C"), descriptor: fd) || !HotUpgrade.writeAll(channel, message) {
                logger.error("upgrade", "handing a connection to the new process failed: \(String(cString: strerror(errno))); closing the rest instead")
                close(channel)
                channel = -1
            }
        }
        return true
    }

    /// New process: takes the connections the old one hands over while it drains, each into its
    /// listener's chain on a worker (round robin), with the bytes the old process had read.
    public func adoptConnections(from inherited: InheritedListeners) {
        let channel = inherited.channel
        startThread(name: "tern-adopt") { [self] in
            var next = 0
            var adopted = 0
            while true {
                var p = pollfd(fd: channel, events: Int16(POLLIN), revents: 0)
                let ready = poll(&p, 1, 1000)
                if ready == 0 { continue }
                guard ready == 1, let (byte, fd) = HotUpgrade.receive(channel, timeoutMS: 0), byte == UInt8(ascii: "C"), fd >= 0 else { break }
                guard let header = HotUpgrade.readExact(channel, 8) else { close(fd); break }
                let nameCount = Int(header[0]) | Int(header[1]) << 8 | Int(header[2]) << 16 | Int(header[3]) << 24
                let dataCount = Int(header[4]) | Int(header[5]) << 8 | Int(header[6]) << 16 | Int(header[7]) << 24
                // Lengths from another process are still bounded before they are trusted.
                guard nameCount <= 1024, dataCount <= 64 << 20, let body = HotUpgrade.readExact(channel, nameCount + dataCount) else { close(fd); break }
                let name = String(decoding: body[0..<nameCount], as: UTF8.self)
                let data = Array(body[nameCount...])
                let queues = remoteQueues
                guard !queues.isEmpty else { close(fd); continue }
                let q = queues[next % queues.count]
                next += 1
                adopted += 1
                q.execute {
                    guard let worker = WorkerRegistry.worker(on: q), let entry = worker.handOffEntries[name],
                          let listener = worker.listeners.first(where: { $0.name == name }) else { close(fd); return }
                    let connection = Connection(fd: fd, loop: worker.loop, buffers: worker.buffers)
                    entry.accepted(connection, listener: listener)
                    connection.deliver(handedOver: data)
                }
            }
            close(channel)
            if adopted > 0 { logger.info("upgrade", "took over \(adopted) client connection(s) from the previous process") }
        }
    }
}

/// The process id file (`tern reload` finds the running process through it).
public enum PIDFile {
    public static func read(_ path: String) -> pid_t? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 32)
        guard fgets(&line, 32, f) != nil else { return nil }
        let text = String(cString: line).filter { $0.isNumber }
        return pid_t(text).flatMap { $0 > 0 ? $0 : nil }
    }

    static func write(_ path: String) -> Bool {
        let temporary = path + ".tmp"
        guard let f = fopen(temporary, "w") else { return false }
        fputs("\(getpid())\n", f)
        fclose(f)
        return rename(temporary, path) == 0
    }
}

extension Server {
    /// Writes this process's id (a successor overwrites it); removed on exit if still ours.
    public func writePIDFile(_ path: String?) {
        guard let path else { return }
        if PIDFile.write(path) { pidFile.withLock { $0 = path } }
        else { logger.warn("server", "cannot write the pid file \(path): \(String(cString: strerror(errno)))") }
    }

    func removePIDFile() {
        guard let path = pidFile.withLock({ $0 }), PIDFile.read(path) == getpid() else { return }
        unlink(path)
    }
}
