import CTernShim
import Glibc
import Synchronization

/// The listening socket of a unix listener. Linux's SO_REUSEPORT spreads only TCP and UDP
/// connections, so a unix path is bound and listened on once (by the main thread, before the
/// workers start), and every worker accepts on its own duplicate of it (`duplicate()`).
///
/// The socket file is Tern's while it runs: a stale one left by a process that died is replaced,
/// a live one is never taken over, anything else at the path is never removed, and `release()`
/// removes the file again on every exit Tern controls.
public final class UnixListenSocket: Sendable {
    public let address: SocketAddress
    /// The main thread's copy; the workers' duplicates close with their listeners.
    public let fd: Int32
    /// The file bound here, by identity: only that file is removed on release, never one another
    /// process has bound at the same path meanwhile.
    private let fileID: (device: UInt64, inode: UInt64)?
    private let released = Atomic<Bool>(false)
    /// Whether a stale socket file was removed from the path first (worth a log line).
    public let replacedStaleFile: Bool

    private init(address: SocketAddress, fd: Int32, fileID: (device: UInt64, inode: UInt64)?, replacedStaleFile: Bool) {
        self.address = address
        self.fd = fd
        self.fileID = fileID
        self.replacedStaleFile = replacedStaleFile
    }

    /// Binds and listens on `address` (AF_UNIX), first removing a stale socket file at its path.
    public static func open(_ address: SocketAddress, backlog: Int32 = 1024) throws(ListenError) -> UnixListenSocket {
        precondition(address.isUnix, "UnixListenSocket needs a unix address")
        let replacedStaleFile = try removeStaleSocketFile(address)
        let fd = tern_socket_stream(AF_UNIX)
        guard fd >= 0 else { throw .socket("socket", errno) }
        let rc = address.withSockAddr { bind(fd, $0, $1) }
        guard rc == 0 else { let e = errno; Glibc.close(fd); throw .socket("bind \(address)", e) }
        let fileID = address.isAbstractUnix ? nil : socketFileID(address.unixPath!)
        guard listen(fd, backlog) == 0 else {
            let e = errno
            if !address.isAbstractUnix { unlink(address.unixPath!) }   // bound just now: ours
            Glibc.close(fd)
            throw .socket("listen \(address)", e)
        }
        return UnixListenSocket(address: address, fd: fd, fileID: fileID, replacedStaleFile: replacedStaleFile)
    }

    /// A socket another Tern bound and handed over (hot upgrade): this process owns its file now
    /// and removes it on exit, as if it had bound it.
    public static func adopt(_ address: SocketAddress, fd: Int32) -> UnixListenSocket {
        let fileID = address.isAbstractUnix ? nil : address.unixPath.flatMap { socketFileID($0) }
        return UnixListenSocket(address: address, fd: fd, fileID: fileID, replacedStaleFile: false)
    }

    /// A close-on-exec duplicate for one worker's `Listener`, or -1 with `errno` set.
    public func duplicate() -> Int32 { tern_dup_cloexec(fd) }

    /// Removes the socket file (when it is still the one bound here) and closes this copy, so new
    /// connects fail at once; connections the workers accepted are not touched. Safe to call more
    /// than once and from any thread.
    public func release() {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if let fileID, let path = address.unixPath, let current = UnixListenSocket.socketFileID(path),
           current == fileID {
            unlink(path)
        }
        Glibc.close(fd)
    }

    /// Before binding: nothing at the path is fine; a socket nobody accepts on (connect refused:
    /// its process died without removing it) is removed; a socket that accepts belongs to a live
    /// process and is an error, as "address in use" is for TCP; anything else is never touched.
    /// True when a stale file was removed.
    static func removeStaleSocketFile(_ address: SocketAddress) throws(ListenError) -> Bool {
        guard !address.isAbstractUnix, let path = address.unixPath else { return false }
        var info = stat()
        if lstat(path, &info) != 0 {
            if errno == ENOENT { return false }
            throw .socket("stat \(path)", errno)
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw .refused("\(path) exists and is not a socket; not removed")
        }
        let probe = tern_socket_stream(AF_UNIX)
        guard probe >= 0 else { throw .socket("socket", errno) }
        defer { Glibc.close(probe) }
        let rc = address.withSockAddr { connect(probe, $0, $1) }
        let e = errno
        // EAGAIN: a full backlog, so someone listens there.
        if rc == 0 || e == EAGAIN || e == EINPROGRESS {
            throw .refused("\(address) is in use by another process (it accepts connections); not removed")
        }
        guard e == ECONNREFUSED else { throw .socket("connect \(address) to check for a stale socket file", e) }
        if unlink(path) != 0 && errno != ENOENT { throw .socket("remove stale socket file \(path)", errno) }
        return true
    }

    static func socketFileID(_ path: String) -> (device: UInt64, inode: UInt64)? {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }
}
