import CTernShim
import Glibc
import Synchronization
import TernCore
import TernTLS

/// Runs a `ServerPlan`: one worker thread per CPU (or as configured), each with its own loop,
/// listeners (SO_REUSEPORT for TCP; a duplicate of the one shared socket for unix), pools and
/// sessions. The main thread only waits for signals.
public final class Server: Sendable {
    let plan: ServerPlan
    let logger: Logger
    let workerCount: Int
    private let remotes = Mutex<[TaskQueue]>([])
    private let startup = Mutex<(ready: Int, failures: [String])>((0, []))
    private let drained = Mutex<Int>(0)
    /// Unix listeners' sockets by index in `plan.listeners`, bound once before the workers start.
    private let unixSockets = Mutex<[Int: UnixListenSocket]>([:])
    /// Set on SIGTERM: the admin API's probes answer 503 from then on.
    let draining = Atomic<Bool>(false)
    /// Hot upgrade: a new process took the listening sockets over; this one drains without
    /// removing the unix socket files (they are the new process's now).
    let handedOff = Atomic<Bool>(false)
    /// Listening sockets taken over from the Tern this one replaces (nil: a first start).
    let inherited: InheritedListeners?
    /// Inherited TCP sockets per listener index, split among the workers (worker w takes those at
    /// positions w, w + workers, ...); a worker with none binds its own.
    private let inheritedTCP = Mutex<[Int: [Int32]]>([:])
    /// Every worker's TCP listening socket, for a later hot upgrade.
    private let workerListenDescriptors = Mutex<[Int32]>([])
    /// This process's upgrade socket (`<uds_dir>/listen.sock`), removed on exit.
    let upgradeService = Mutex<UpgradeService?>(nil)
    /// After a hand-over: the channel to the successor, for the connections moved while draining.
    let successor = Mutex<Int32>(-1)
    /// The plan running now: `plan` until a reload replaces routes, clusters and proxy settings.
    let current: Mutex<ServerPlan>
    /// The config file a reload (SIGHUP) reads again; nil: no reload (tests that pass a plan).
    public let configPath: String?
    /// Where this process wrote its id.
    let pidFile = Mutex<String?>(nil)
    /// The access-log files' writer thread; nil when no listener has access logs.
    let accessLogWriter = Mutex<AccessLogWriter?>(nil)
    /// The health checker's loop queue (its thread starts with the first checked cluster).
    let healthCheckQueue = Mutex<TaskQueue?>(nil)
    /// STRICT_DNS: the resolver thread (nil without such clusters) and its latest answers.
    let resolver: StrictDNSResolver?
    let resolvedHosts: Mutex<[String: [JSONValue]]>
    /// Held while the running plan changes (a reload on the main thread, a DNS answer on the
    /// resolver's), so every worker gets the changes in the order they were made.
    let planChange = Mutex<Int>(0)

    public init(plan: ServerPlan, logger: Logger, workers: Int?, inherited: InheritedListeners? = nil, configPath: String? = nil,
                resolver: StrictDNSResolver? = nil, resolvedHosts: [String: [JSONValue]] = [:]) {
        self.plan = plan
        self.resolver = resolver
        self.resolvedHosts = Mutex(resolvedHosts)
        current = Mutex(plan)
        self.configPath = configPath
        _ = ProcessFigures.startTime   // Swift statics start on first use: this is the process's start
        self.logger = logger
        self.inherited = inherited
        workerCount = max(1, workers ?? plan.workers ?? Int(tern_cpu_count_affinity()))
    }

    /// The listening sockets a new process takes over: every worker's TCP socket and the unix
    /// listeners' shared ones.
    func handOverDescriptors() -> [Int32] {
        workerListenDescriptors.withLock { $0 } + unixSockets.withLock { sockets in sockets.keys.sorted().map { sockets[$0]!.fd } }
    }

    /// Starts the workers; returns the listen errors (empty when every listener is open on every worker).
    public func start() -> [String] {
        // SO_REUSEPORT would let a second Tern (same user) share a port silently: probe each
        // address with a plain bind first so "address in use" is an error, as it is for MOSN.
        for (index, l) in plan.listeners.enumerated() where l.bindPort && !l.address.isUnix {
            if let taken = inherited?.take(l.address), !taken.isEmpty {
                inheritedTCP.withLock { $0[index] = taken }
                continue
            }
            if let problem = probeBind(l.address) { return ["listener \(l.name): \(problem)"] }
        }
        tern_block_signals()   // inherited by the worker threads: only the main thread takes signals
        // Signals are blocked first: a socket file bound from here on is removed on every exit.
        if let failure = openUnixSockets() { return [failure] }
        if let failure = startAccessLogs() {
            releaseUnixSockets()
            return [failure]
        }
        if plan.admin.isEnabled, let failure = startAdmin() {
            releaseUnixSockets()
            return [failure]
        }
        let failures = startWorkers()
        if !failures.isEmpty { releaseUnixSockets(); return failures }
        startHealthChecks(plan.clusters)
        resolver?.start { [weak self] cluster, hosts in self?.namesResolved(cluster, hosts) }
        return failures
    }

    /// Active health checks run on a thread of their own (`tern-healthcheck`), never a worker's:
    /// a probe's connect or answer cannot delay a request. Started when a cluster asks for checks;
    /// a reload hands it the new clusters.
    func startHealthChecks(_ clusters: [ClusterConfig]) {
        if let queue = healthCheckQueue.withLock({ $0 }) {
            queue.execute { HealthCheckerRegistry.checker(on: queue)?.replace(clusters: clusters) }
            return
        }
        guard clusters.contains(where: { $0.healthCheck != nil && !$0.removed }) else { return }
        let ready = Mutex<TaskQueue?>(nil)
        let logger = self.logger
        startThread(name: "tern-healthcheck") {
            let loop = EventLoop()
            let checker = HealthChecker(loop: loop, logger: logger)
            HealthCheckerRegistry.register(checker, on: loop.remote)
            checker.replace(clusters: clusters)
            ready.withLock { $0 = loop.remote }
            loop.run()
        }
        let deadline = tern_monotonic_ms() + 5_000
        while tern_monotonic_ms() < deadline {
            if let queue = ready.withLock({ $0 }) { healthCheckQueue.withLock { $0 = queue }; return }
            usleep(1000)
        }
        logger.error("healthcheck", "the health checker did not start within 5 s; hosts stay in rotation")
    }

    private func startWorkers() -> [String] {
        let descriptors = tern_raise_nofile_limit()
        logger.info("server", "\(workerCount) worker(s), descriptor limit \(descriptors)")
        for id in 0..<workerCount {
            startThread(name: "tern-worker-\(id)") { [self] in self.runWorker(id: id) }
        }
        let deadline = tern_monotonic_ms() + 10_000
        while tern_monotonic_ms() < deadline {
            let state = startup.withLock { $0 }
            if state.ready + state.failures.count == workerCount { return state.failures }
            usleep(1000)
        }
        return ["workers did not start within 10 s"]
    }

    private func runWorker(id: Int) {
        let worker = Worker(id: id, clusters: plan.clusters, logger: logger)
        if let writer = accessLogWriter.withLock({ $0 }) { worker.accessLogOutput = AccessLogOutput(writer: writer, loop: worker.loop) }
        var failure: String?
        let shared = unixSockets.withLock { $0 }
        // Every listener's chain, opened or not: bind_port: false listeners take hand-offs.
        worker.listenerCounters = plan.listeners.map { _ in ListenerCounters() }
        let chains = zip(plan.listeners, worker.listenerCounters).map { l, counters in
            NetworkFilterChain(filters: l.filters.map { $0.makeFilter(worker: worker) }, counters: counters)
        }
        // Where a listener's connections enter: TLS first when it terminates TLS (behind the
        // first-byte inspector when it also serves plain text), for its own accepts and for
        // connections handed off to it alike.
        var tlsHandlers: [Int: TLSAcceptHandler] = [:]
        let entries: [AcceptHandler] = zip(plan.listeners, chains).enumerated().map { index, pair in
            let (l, chain) = pair
            if let routing = l.serverNameRouting {
                let routed = routing.chains.map { NetworkFilterChain(filters: $0.map { $0.makeFilter(worker: worker) }) }
                return ServerNameRouter(table: routing.table, chains: routed, worker: worker, waitMS: routing.waitMS, listenerName: l.name)
            }
            guard let tls = l.tls else { return chain }
            let terminate = TLSAcceptHandler(context: tls, next: chain, logger: logger, handshakeTimeoutMS: l.tlsHandshakeTimeoutMS)
            tlsHandlers[index] = terminate
            guard let wait = l.inspectorWaitMS else { return terminate }
            return TLSInspector(tls: terminate, plain: chain, worker: worker, idleTimeoutMS: wait, listenerName: l.name)
        }
        for (index, l) in plan.listeners.enumerated() where l.bindPort {
            let handler: AcceptHandler = l.capture.map { captureStage($0, own: entries[index], entries: entries, worker: worker) } ?? entries[index]
            do {
                let listener: Listener
                if let socket = shared[index] {
                    let fd = socket.duplicate()
                    guard fd >= 0 else { throw ListenError.socket("dup \(l.address)", errno) }
                    listener = Listener(name: l.name, address: l.address, listeningDescriptor: fd, loop: worker.loop, buffers: worker.buffers, handler: handler)
                } else {
                    let taken = inheritedTCP.withLock { all in stride(from: id, to: all[index]?.count ?? 0, by: workerCount).map { all[index]![$0] } }
                    if let first = taken.first {
                        // Taken over: the old process's accept queues, shared, so nothing waiting is lost.
                        listener = Listener(name: l.name, address: l.address, listeningDescriptor: first, loop: worker.loop, buffers: worker.buffers, handler: handler)
                        for more in taken.dropFirst() {
                            let extra = Listener(name: l.name, address: l.address, listeningDescriptor: more, loop: worker.loop, buffers: worker.buffers, handler: handler)
                            extra.onAcceptError = { [logger] in logger.error("listener", $0) }
                            worker.listeners.append(extra)
                            workerListenDescriptors.withLock { $0.append(more) }
                        }
                    } else {
                        listener = try Listener(name: l.name, address: l.address, loop: worker.loop, buffers: worker.buffers, handler: handler,
                                                transparent: l.capture?.mode == .tproxy)
                    }
                }
                listener.onAcceptError = { [logger] in logger.error("listener", $0) }
                worker.listeners.append(listener)
                if !l.address.isUnix { workerListenDescriptors.withLock { $0.append(listener.fd) } }
            } catch {
                failure = "listener \(l.name): \(error)"
                break
            }
        }
        for (l, chain) in zip(plan.listeners, chains) where l.tls == nil && l.serverNameRouting == nil && l.capture == nil {
            worker.handOffEntries[l.name] = chain
        }
        TLSHandlerRegistry.attach(tlsHandlers, to: worker.loop.remote)
        remotes.withLock { $0.append(worker.loop.remote) }
        startup.withLock { if let failure { $0.failures.append(failure) } else { $0.ready += 1 } }
        if failure != nil { return }
        // Drain: stop listening, let sessions finish, report when none are left.
        let drainPoller = DrainPoller(worker: worker) { [self] in self.drained.withLock { $0 += 1 } }
        WorkerRegistry.attach(drainPoller, to: worker)
        worker.loop.run()
    }

    /// The listener-filter stage of a capturing listener: original_dst, then hand-off to whichever
    /// listener of the plan owns the original destination (itself included).
    private func captureStage(_ capture: CapturePlan, own: AcceptHandler, entries: [AcceptHandler], worker: Worker) -> ListenerFilterStage {
        let targets = zip(plan.listeners, entries).map { l, entry in
            HandOffTarget(name: l.name, address: l.address, isPortFallback: isPortFallback(l.address, toLocal: capture.fallbackToLocal), entry: entry)
        }
        return ListenerFilterStage(filters: [OriginalDestinationFilter(mode: capture.mode, logger: logger)], ownChain: own,
                                   handOff: targets, logger: logger)
    }

    /// Blocks the calling (main) thread on signals: SIGTERM drains then returns 0; SIGINT and
    /// SIGQUIT return at once; SIGHUP reloads certificates.
    /// Between signals it looks at the certificate files every `CertificateWatch.intervalMS`.
    public func waitForSignals() -> Int32 {
        var certificates = CertificateWatch(plan: plan)
        while true {
            let sig = certificates.isEmpty ? tern_wait_signal() : tern_wait_signal_for(CertificateWatch.intervalMS)
            if sig == 0 {
                for target in certificates.changed() { reload(target, cause: "files changed") }
                continue
            }
            switch sig {
            case SIGTERM:
                logger.info("server", "SIGTERM: draining (timeout \(plan.drainTimeoutMS) ms)")
                draining.store(true, ordering: .relaxed)
                // New connects fail at once, as for a closed TCP listener; after a hot upgrade the
                // files are the new process's and stay.
                if handedOff.load(ordering: .relaxed) {
                    installHandOff()   // the upgrade socket and its directory are the successor's now
                } else {
                    releaseUnixSockets()
                    removePIDFile()
                    upgradeService.withLock { $0?.stop() }
                }
                let code = drain()
                finishAccessLogs()
                return code
            case SIGINT, SIGQUIT:
                logger.info("server", "signal \(sig): exiting now")
                releaseUnixSockets()
                removePIDFile()
                upgradeService.withLock { $0?.stop() }
                finishAccessLogs()
                return 0
            case SIGHUP:
                logger.info("server", "SIGHUP: reloading the config and certificates")
                reloadConfig(cause: "SIGHUP")
                certificates.rememberAll()
                reloadCertificates()
            case SIGUSR1:
                reopenLogs()
            default:
                continue
            }
        }
    }

    /// Binds every unix listener once (stale socket files replaced, live ones refused); on a
    /// failure the ones already bound are released and the error names the listener.
    private func openUnixSockets() -> String? {
        for (index, l) in plan.listeners.enumerated() where l.bindPort && l.address.isUnix {
            if let fd = inherited?.take(l.address).first {
                unixSockets.withLock { $0[index] = UnixListenSocket.adopt(l.address, fd: fd) }
                continue
            }
            do {
                let socket = try UnixListenSocket.open(l.address)
                unixSockets.withLock { $0[index] = socket }
                if socket.replacedStaleFile { logger.info("listener", "listener \(l.name): replaced the stale socket file at \(l.address)") }
            } catch {
                releaseUnixSockets()
                return "listener \(l.name): \(error)"
            }
        }
        return nil
    }

    /// Removes the unix listeners' socket files and closes the main thread's copies.
    func releaseUnixSockets() {
        for socket in unixSockets.withLock({ $0.values }) { socket.release() }
    }

    /// Every started worker's task queue.
    var remoteQueues: [TaskQueue] { remotes.withLock { $0 } }

    func drain() -> Int32 {
        let queues = remoteQueues
        for q in queues {
            q.execute { WorkerRegistry.startDrain(on: q) }
        }
        let deadline = tern_monotonic_ms() + plan.drainTimeoutMS
        while tern_monotonic_ms() < deadline {
            if drained.withLock({ $0 }) >= queues.count {
                logger.info("server", "drained; exiting")
                return 0
            }
            usleep(5000)
        }
        logger.warn("server", "drain timeout reached with requests still in flight; exiting")
        return 0
    }
}

/// Watches a draining worker until its sessions are gone.
final class DrainPoller: TimerTarget {
    let worker: Worker
    let onDrained: () -> Void
    var timer: LoopTimer!
    var reported = false

    init(worker: Worker, onDrained: @escaping () -> Void) {
        self.worker = worker
        self.onDrained = onDrained
        timer = LoopTimer(target: self)
    }

    func start() {
        worker.beginDrain()
        check()
    }

    func check() {
        if worker.sessionCount == 0 {
            worker.closeIdleUpstreams()
            if !reported {
                reported = true
                worker.logStats()
                onDrained()
            }
            return
        }
        worker.loop.timers.arm(timer, at: worker.loop.nowMS + 10)
    }

    func timerFired(_ timer: LoopTimer) { check() }
}

/// Finds the drain poller of the worker whose loop runs the current task. Each entry is touched
/// only on its own worker's thread; the lock guards the dictionary itself.
enum WorkerRegistry {
    private static let pollers = Mutex<[ObjectIdentifier: UncheckedBox<DrainPoller>]>([:])

    static func attach(_ poller: DrainPoller, to worker: Worker) {
        pollers.withLock { $0[ObjectIdentifier(worker.loop.remote)] = UncheckedBox(poller) }
    }

    static func startDrain(on queue: TaskQueue) {
        let poller = pollers.withLock { $0[ObjectIdentifier(queue)] }
        poller?.value.start()
    }

    /// The worker whose loop runs the current task (call only from a task on `queue`).
    static func worker(on queue: TaskQueue) -> Worker? {
        pollers.withLock { $0[ObjectIdentifier(queue)] }?.value.worker
    }
}

/// Carries a thread-confined object through a lock; only its own thread dereferences it.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Starts a detached POSIX thread running `body` (Foundation's Thread is not linked into Tern).
func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
    final class Start { let body: @Sendable () -> Void; let name: String; init(_ b: @escaping @Sendable () -> Void, _ n: String) { body = b; name = n } }
    let box = Unmanaged.passRetained(Start(body, name)).toOpaque()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    pthread_attr_setstacksize(&attributes, 1 << 20)
    var thread = pthread_t()
    let rc = pthread_create(&thread, &attributes, { argument in
        let start = Unmanaged<Start>.fromOpaque(argument!).takeRetainedValue()
        tern_set_thread_name(start.name)
        start.body()
        return nil
    }, box)
    pthread_attr_destroy(&attributes)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    pthread_detach(thread)
}

/// Binds `address` without SO_REUSEPORT and releases it; nil when the address is free.
func probeBind(_ address: SocketAddress) -> String? {
    let fd = tern_socket_tcp(address.family)
    guard fd >= 0 else { return "socket: \(String(cString: strerror(errno)))" }
    defer { close(fd) }
    _ = tern_set_reuse(fd, 0)
    let rc = address.withSockAddr { bind(fd, $0, $1) }
    if rc != 0 { return "bind \(address): \(String(cString: strerror(errno)))" }
    return nil
}

/// Whether a listener on `address` takes hand-offs for any address of its port: 0.0.0.0 or [::]
/// (MOSN), or with `fallback_to_local` the loopback address instead.
func isPortFallback(_ address: SocketAddress, toLocal: Bool) -> Bool {
    guard toLocal else { return address.isUnspecified }
    let loopback = address.family == AF_INET ? "127.0.0.1:\(address.port)" : "[::1]:\(address.port)"
    return SocketAddress.parse(loopback) == address
}

// MARK: reload

extension Server {
    /// SIGHUP (or `tern reload`): reads the config file again and, when it is valid and its
    /// listeners differ only in what can change in place (routes, clusters, proxy settings, stream
    /// filters), gives every worker the new routes and clusters as a new read-only snapshot;
    /// connections stay open. Anything else is refused with the reason, and the running config
    /// stays. Listener changes take a hot upgrade (`tern start` with the same uds_dir).
    func reloadConfig(cause: String) {
        guard let path = configPath else { return }
        planChange.withLock { _ in
            let previous = current.withLock { $0 }
            guard let text = readFile(path) else {
                logger.error("reload", "config \(path) refused (\(cause)): cannot read it (\(String(cString: strerror(errno)))); the running config stays")
                return
            }
            let result = ConfigLoader.load(text: text, previous: previous, resolvedHosts: resolvedHosts.withLock { $0 })
            if install(result, previous: previous, cause: cause, what: "config \(path)") {
                resolver?.replace(current.withLock { $0 }.strictDNS)
            }
        }
    }

    /// New answers for a STRICT_DNS cluster: the running config compiled again with them, then
    /// swapped in as a reload would (routes too only when the cluster has subsets to re-resolve).
    func namesResolved(_ cluster: String, _ hosts: [JSONValue]) {
        planChange.withLock { _ in
            let all = resolvedHosts.withLock { $0[cluster] = hosts; return $0 }
            let previous = current.withLock { $0 }
            let result = ConfigLoader.load(text: previous.sourceText, previous: previous, resolvedHosts: all)
            let keepsRoutes = previous.clusters.first(where: { $0.name == cluster })?.subsets == nil
            // The config's warnings were logged when it was loaded: not again for each answer.
            _ = install(result, previous: previous, cause: "DNS answer for cluster \(cluster)", what: "the running config",
                        keepRoutes: keepsRoutes, logWarnings: false)
        }
    }

    /// Swaps a compiled config in on every worker; false (and logged) when it is refused.
    private func install(_ result: ConfigResult, previous: ServerPlan, cause: String, what: String,
                         keepRoutes: Bool = false, logWarnings: Bool = true) -> Bool {
        guard var next = result.plan else {
            for e in result.diagnostics.errors { logger.error("reload", e) }
            logger.error("reload", "\(what) refused (\(cause)): \(result.diagnostics.errors.count) error(s); the running config stays")
            return false
        }
        let before = previous.listeners.map { "\($0.name)=\($0.shape)" }, after = next.listeners.map { "\($0.name)=\($0.shape)" }
        guard before == after else {
            let changed = Set(before).symmetricDifference(after).compactMap { $0.split(separator: "=").first.map(String.init) }
            logger.error("reload", "\(what) refused (\(cause)): listener(s) \(Set(changed).sorted().joined(separator: ", ")) changed beyond routes, proxy settings and stream filters; start the new config with `tern start` (hot upgrade) to change listeners; the running config stays")
            return false
        }
        if logWarnings { for w in result.diagnostics.warnings { logger.warn("reload", w) } }
        // Unchanged clusters keep their runtimes on the workers, and so the host health those read.
        for i in next.clusters.indices {
            if let old = previous.clusters.first(where: { $0.name == next.clusters[i].name && $0.fingerprint == next.clusters[i].fingerprint }) {
                next.clusters[i].health = old.health
                next.clusters[i].healthCheck = old.healthCheck
            }
        }
        let settings = keepRoutes ? nil : Self.proxySettingsInBuildOrder(next)
        if keepRoutes {
            // The workers keep the routes and filters they have: so does the running plan.
            next.listeners = previous.listeners
        }
        current.withLock { $0 = next }
        let nextClusters = next.clusters
        for q in remoteQueues {
            q.execute { WorkerRegistry.worker(on: q)?.reload(clusters: nextClusters, settings: settings) }
        }
        let added = next.clusters.filter { c in !c.removed && !previous.clusters.contains { $0.name == c.name } }.map(\.name)
        let removed = next.clusters.indices.filter { next.clusters[$0].removed && $0 < previous.clusters.count && !previous.clusters[$0].removed }.map { next.clusters[$0].name }
        let changed = next.clusters.filter { c in !c.removed && previous.clusters.contains { $0.name == c.name && $0.fingerprint != c.fingerprint } }.map(\.name)
        let reloaded = next.clusters
        startHealthChecks(reloaded)
        logger.info("reload", "\(what) reloaded (\(cause)): \(keepRoutes ? "routes and proxy settings kept" : "routes and proxy settings replaced"); clusters added [\(added.joined(separator: ", "))], changed [\(changed.joined(separator: ", "))], removed [\(removed.joined(separator: ", "))]")
        return true
    }

    /// Every proxy filter's settings in the order runWorker makes their forwarders: each listener's
    /// chain, then each listener's server-name chains.
    static func proxySettingsInBuildOrder(_ plan: ServerPlan) -> [ProxySettings] {
        func settings(_ filters: [NetworkFilterPlan]) -> [ProxySettings] { filters.compactMap { ($0 as? ProxyFilterPlan)?.settings } }
        return plan.listeners.flatMap { settings($0.filters) } + plan.listeners.flatMap { ($0.serverNameRouting?.chains ?? []).flatMap(settings) }
    }
}

// MARK: access logs and log rotation

extension Server {
    /// Opens the access-log files and starts their writer thread; the error names the file.
    func startAccessLogs() -> String? {
        guard !plan.accessLogPaths.isEmpty else { return nil }
        do {
            let writer = try AccessLogWriter(paths: plan.accessLogPaths)
            accessLogWriter.withLock { $0 = writer }
            startThread(name: "tern-accesslog") { writer.run() }
            return nil
        } catch {
            return error.description
        }
    }

    /// SIGUSR1, as MOSN: every log file (the default log and the access logs) is opened again by
    /// its path, so logrotate can move the old ones away.
    func reopenLogs() {
        if let problem = logger.reopen() { logger.error("server", "SIGUSR1: \(problem)") }
        let writer = accessLogWriter.withLock { $0 }
        if let writer {
            // The writer thread reopens between two buffers: wait for it (briefly) to say how it went.
            let before = writer.reopensDone.load(ordering: .acquiring)
            writer.reopen()
            let deadline = tern_monotonic_ms() + 500
            while writer.reopensDone.load(ordering: .acquiring) == before && tern_monotonic_ms() < deadline { usleep(1000) }
            for problem in writer.takeFailures() { logger.error("accesslog", "SIGUSR1: \(problem)") }
        }
        logger.info("server", "SIGUSR1: log files reopened (\(1 + (writer?.paths.count ?? 0)) file(s))")
    }

    /// Before exit: every worker hands over the lines it holds, and the writer writes them (at
    /// most about 2 s in all, so a stuck disk cannot hold the exit).
    func finishAccessLogs() {
        guard let writer = accessLogWriter.withLock({ $0 }) else { return }
        let queues = remoteQueues
        let flushed = Mutex(0)
        for q in queues {
            q.execute {
                WorkerRegistry.worker(on: q)?.accessLogOutput?.flushAll()
                flushed.withLock { $0 += 1 }
            }
        }
        let deadline = tern_monotonic_ms() + 1000
        while flushed.withLock({ $0 }) < queues.count && tern_monotonic_ms() < deadline { usleep(1000) }
        writer.finish(timeoutMS: 1000)
        for problem in writer.takeFailures() { logger.error("accesslog", problem) }
        let dropped = writer.droppedLines.load(ordering: .relaxed)
        if dropped > 0 { logger.error("accesslog", "\(dropped) access-log line(s) dropped: the disk took them slower than they came") }
    }
}
