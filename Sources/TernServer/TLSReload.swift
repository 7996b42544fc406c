import CTernShim
import Glibc
import Synchronization
import TernCore
import TernTLS

extension ConfigCompiler {
    /// The files a `tls_context`'s PEM keys name (an inline PEM has nothing to reload).
    func tlsFiles(_ t: JSONObject) -> TLSContextFiles {
        func path(_ key: String) -> String? {
            guard let value = t.present(key), case .string(let s) = value, !s.isEmpty, !s.contains("-----BEGIN") else { return nil }
            return s
        }
        return TLSContextFiles(certificateChain: path("cert_chain"), privateKey: path("private_key"), ca: path("ca_cert"))
    }
}

/// Certificate reload, on SIGHUP or when a certificate file changes on disk (`CertificateWatch`,
/// on the main thread): a TLS listener's contexts, or a cluster's client context, are built
/// again from their files with every other setting as loaded. A listener's new set reaches every
/// worker as a task; a cluster's new context is picked up by each worker at its next upstream
/// connect. Files that fail to load (unreadable, half written, a key that does not match the
/// certificate) leave the certificates in use in place and log an ERROR; established connections
/// keep the context they started with either way.
extension Server {
    /// SIGHUP: everything that has files.
    func reloadCertificates() {
        var targets = 0
        for (index, l) in plan.listeners.enumerated() where l.tls != nil && l.tlsFiles.contains(where: { !$0.isEmpty }) {
            targets += 1
            reload(.listener(index), cause: "SIGHUP")
        }
        for slot in Server.reloadableClientContexts(plan) {
            targets += 1
            reload(.upstream(slot), cause: "SIGHUP")
        }
        if targets == 0 { logger.info("tls", "SIGHUP: no listener or cluster has certificate files to reload") }
    }

    func reload(_ target: CertificateWatch.Target, cause: String) {
        switch target {
        case .listener(let index):
            let l = plan.listeners[index]
            guard let current = l.tls else { return }
            let fresh: TLSServerContextSet
            do { fresh = try Server.rebuild(current, files: l.tlsFiles) } catch {
                logger.error("tls", "listener \(l.name): certificate reload failed (\(cause)), the certificates in use stay: \(error.message)")
                return
            }
            for queue in remoteQueues {
                queue.execute { TLSHandlerRegistry.install(fresh, listener: index, on: queue) }
            }
            logger.info("tls", "listener \(l.name): certificates reloaded (\(cause), \(fresh.contexts.count) context(s)); new handshakes use them")
        case .upstream(let slot):
            do { slot.replace(with: try Server.rebuild(slot.context, files: slot.files)) } catch {
                logger.error("tls", "\(slot.owner): certificate reload failed (\(cause)), the certificates in use stay: \(error.message)")
                return
            }
            logger.info("tls", "\(slot.owner): certificates reloaded (\(cause)); new upstream connections use them")
        }
    }

    /// Each cluster's (or the shared cluster manager's) client context that has files, once.
    static func reloadableClientContexts(_ plan: ServerPlan) -> [TLSClientContextSlot] {
        var seen: Set<ObjectIdentifier> = []
        var slots: [TLSClientContextSlot] = []
        for c in plan.clusters {
            guard let tls = c.upstreamTransport as? UpstreamTLS, !tls.slot.files.isEmpty,
                  seen.insert(ObjectIdentifier(tls.slot)).inserted else { continue }
            slots.append(tls.slot)
        }
        return slots
    }

    struct ReloadError: Error { let message: String }

    static func rebuild(_ set: TLSServerContextSet, files: [TLSContextFiles]) throws(ReloadError) -> TLSServerContextSet {
        var contexts: [TLSServerContext] = []
        for (i, context) in set.contexts.enumerated() {
            var s = context.settings
            let f = files[i]
            let place = set.contexts.count > 1 ? "context \(i) " : ""
            if let pem = try readPEM(f.certificateChain, "\(place)cert_chain") { s.certificateChainPEM = pem }
            if let pem = try readPEM(f.privateKey, "\(place)private_key") { s.privateKeyPEM = pem }
            if let pem = try readPEM(f.ca, "\(place)ca_cert") { s.clientCAPEM = pem }
            do { contexts.append(try TLSServerContext(s)) } catch {
                throw ReloadError(message: "\(place)\(error.key): \(error.message)")
            }
        }
        return TLSServerContextSet(contexts)
    }

    static func rebuild(_ context: TLSClientContext, files: TLSContextFiles) throws(ReloadError) -> TLSClientContext {
        var s = context.settings
        if let pem = try readPEM(files.certificateChain, "cert_chain") { s.certificateChainPEM = pem }
        if let pem = try readPEM(files.privateKey, "private_key") { s.privateKeyPEM = pem }
        if let pem = try readPEM(files.ca, "ca_cert") { s.trustedCAPEM = pem }
        do { return try TLSClientContext(s) } catch { throw ReloadError(message: "\(error.key): \(error.message)") }
    }

    private static func readPEM(_ path: String?, _ key: String) throws(ReloadError) -> [UInt8]? {
        guard let path else { return nil }
        guard let text = readFile(path) else { throw ReloadError(message: "\(key) \(path): cannot read it (\(String(cString: strerror(errno))))") }
        return Array(text.utf8)
    }
}

/// The certificate files of every TLS listener and TLS cluster, looked at on the main thread every
/// `intervalMS` (between signals; never on a worker): a file whose stat(2) identity or state
/// changed reloads its owner. stat follows symlinks, so a file replaced by rename (a new inode),
/// rewritten in place (size, mtime), or a Kubernetes secret whose `..data` symlink flips to a new
/// directory all count as changes. A reload that fails is not retried until a file changes again.
struct CertificateWatch {
    static let intervalMS: Int32 = 2000

    enum Target {
        case listener(Int)
        case upstream(TLSClientContextSlot)
    }

    /// What stat(2) says of a file; nil when it cannot be read (gone during a swap).
    struct Fingerprint: Equatable {
        let device: UInt64
        let inode: UInt64
        let size: Int64
        let modified: timespec
        let changed: timespec

        init?(_ path: String) {
            var s = stat()
            guard stat(path, &s) == 0 else { return nil }
            device = UInt64(s.st_dev)
            inode = UInt64(s.st_ino)
            size = Int64(s.st_size)
            modified = s.st_mtim
            changed = s.st_ctim
        }

        static func == (a: Fingerprint, b: Fingerprint) -> Bool {
            a.device == b.device && a.inode == b.inode && a.size == b.size
                && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
                && a.changed.tv_sec == b.changed.tv_sec && a.changed.tv_nsec == b.changed.tv_nsec
        }
    }

    private struct Entry {
        let target: Target
        let paths: [String]
        var seen: [Fingerprint?]
    }

    private var entries: [Entry] = []

    init(plan: ServerPlan) {
        for (index, l) in plan.listeners.enumerated() where l.tls != nil {
            let paths = l.tlsFiles.flatMap(\.paths)
            if !paths.isEmpty { entries.append(Entry(target: .listener(index), paths: paths, seen: paths.map(Fingerprint.init))) }
        }
        for slot in Server.reloadableClientContexts(plan) {
            let paths = slot.files.paths
            entries.append(Entry(target: .upstream(slot), paths: paths, seen: paths.map(Fingerprint.init)))
        }
    }

    var isEmpty: Bool { entries.isEmpty }

    /// The owners whose files changed since the last look (now remembered as seen). The state is
    /// taken before the owner reads its files, so a write after that read is seen next time.
    mutating func changed() -> [Target] {
        var targets: [Target] = []
        for i in entries.indices {
            let now = entries[i].paths.map(Fingerprint.init)
            if now != entries[i].seen {
                entries[i].seen = now
                targets.append(entries[i].target)
            }
        }
        return targets
    }

    /// Before a reload of everything (SIGHUP): what it reads is what is seen.
    mutating func rememberAll() {
        for i in entries.indices { entries[i].seen = entries[i].paths.map(Fingerprint.init) }
    }
}

/// Each worker's TLS entry points by listener index, so a reload reaches them through the
/// worker's own task queue. Each entry is touched only on its own worker's thread; the lock
/// guards the dictionary itself (used at start and on reload, never per connection).
enum TLSHandlerRegistry {
    private static let handlers = Mutex<[ObjectIdentifier: UncheckedBox<[Int: TLSAcceptHandler]>]>([:])

    static func attach(_ byListener: [Int: TLSAcceptHandler], to queue: TaskQueue) {
        if byListener.isEmpty { return }
        handlers.withLock { $0[ObjectIdentifier(queue)] = UncheckedBox(byListener) }
    }

    static func install(_ set: TLSServerContextSet, listener index: Int, on queue: TaskQueue) {
        let own = handlers.withLock { $0[ObjectIdentifier(queue)] }
        own?.value[index]?.context = set
    }
}
