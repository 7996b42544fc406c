import Synchronization
import TernCore
import TernTLS

/// Where one TLS context's PEM came from on disk; nil where the config holds it inline (inline
/// PEM has nothing to reload).
public struct TLSContextFiles: Sendable, Equatable {
    public var certificateChain: String?
    public var privateKey: String?
    public var clientCA: String?
    var isEmpty: Bool { certificateChain == nil && privateKey == nil && clientCA == nil }
}

extension ConfigCompiler {
    func tlsFiles(_ t: JSONObject) -> TLSContextFiles {
        func path(_ key: String) -> String? {
            guard let value = t.present(key), case .string(let s) = value, !s.isEmpty, !s.contains("-----BEGIN") else { return nil }
            return s
        }
        return TLSContextFiles(certificateChain: path("cert_chain"), privateKey: path("private_key"), clientCA: path("ca_cert"))
    }
}

/// Certificate reload (SIGHUP): each TLS listener's contexts are built again from their files,
/// with every other setting as loaded, and handed to every worker for new handshakes. A listener
/// whose files fail to load keeps the contexts it has and logs an ERROR; established connections
/// keep the context they started with either way.
extension Server {
    func reloadCertificates() {
        var reloaded = 0
        for (index, l) in plan.listeners.enumerated() {
            guard let current = l.tls, l.tlsFiles.contains(where: { !$0.isEmpty }) else { continue }
            let fresh: TLSServerContextSet
            do { fresh = try Server.rebuild(current, files: l.tlsFiles) } catch {
                logger.error("tls", "listener \(l.name): certificate reload failed, the certificates in use stay: \(error.message)")
                continue
            }
            for queue in remoteQueues {
                queue.execute { TLSHandlerRegistry.install(fresh, listener: index, on: queue) }
            }
            reloaded += 1
            logger.info("tls", "listener \(l.name): certificates reloaded (\(fresh.contexts.count) context(s)); new handshakes use them")
        }
        if reloaded == 0 { logger.info("tls", "SIGHUP: no listener has certificate files to reload") }
    }

    struct ReloadError: Error { let message: String }

    static func rebuild(_ set: TLSServerContextSet, files: [TLSContextFiles]) throws(ReloadError) -> TLSServerContextSet {
        var contexts: [TLSServerContext] = []
        for (i, context) in set.contexts.enumerated() {
            var s = context.settings
            let f = files[i]
            let place = set.contexts.count > 1 ? "context \(i) " : ""
            func read(_ path: String?, _ key: String) throws(ReloadError) -> [UInt8]? {
                guard let path else { return nil }
                guard let text = readFile(path) else { throw ReloadError(message: "\(place)\(key) \(path): cannot read it") }
                return Array(text.utf8)
            }
            if let pem = try read(f.certificateChain, "cert_chain") { s.certificateChainPEM = pem }
            if let pem = try read(f.privateKey, "private_key") { s.privateKeyPEM = pem }
            if let pem = try read(f.clientCA, "ca_cert") { s.clientCAPEM = pem }
            do { contexts.append(try TLSServerContext(s)) } catch {
                throw ReloadError(message: "\(place)\(error.key): \(error.message)")
            }
        }
        return TLSServerContextSet(contexts)
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
