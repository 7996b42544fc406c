import Glibc
import TernCore
import TernServer

// The CLI only: argument handling, then the Server module does the work.

func printError(_ text: String) { let line = text + "\n"; _ = line.withCString { write(2, $0, strlen($0)) } }

let usageText = """
    usage: tern start -c CONFIG [--workers N] [-l LEVEL]   run a MOSN-format JSON config
           tern validate -c CONFIG                         check a config; errors name their JSON path
           tern reload -c CONFIG                           check it, then have the running Tern apply it
                                                           (routes, clusters, proxy settings; SIGHUP)
           tern version
           tern help                                       this text (also -h, --help)

    options:
      -c, --config FILE          the config (MOSN's JSON format)
      --workers N                worker threads (default: servers[0].processor, else one per CPU)
      -l, --log-level LEVEL      FATAL, ERROR, WARN, INFO, DEBUG or TRACE (overrides default_log_level)

    exit status: 0 ok, 1 invalid config, a listener that cannot open or no running Tern
    to reload, 2 bad command line
    """

/// A bad command line: the usage on stderr, exit 2.
func usage() -> Never {
    printError(usageText)
    exit(2)
}

var args = Array(CommandLine.arguments.dropFirst())
guard let command = args.first else { usage() }
if ["help", "-h", "--help"].contains(command) {
    print(usageText)
    exit(0)
}
args.removeFirst()
var configPath: String?
var workers: Int?
var logLevel: LogLevel?
var i = 0
while i < args.count {
    let a = args[i]
    func value() -> String {
        i += 1
        guard i < args.count else { usage() }
        return args[i]
    }
    switch a {
    case "-h", "--help": print(usageText); exit(0)
    case "-c", "--config": configPath = value()
    case let s where s.hasPrefix("--config="): configPath = String(s.dropFirst(9))
    case "--workers", "--concurrency": guard let n = Int(value()), n > 0, n <= 1024 else { usage() }; workers = n
    case "-l", "--log-level": guard let l = LogLevel.parse(value()) else { usage() }; logLevel = l
    // MOSN flags that take a value and do not apply to Tern yet.
    case "-s", "--service-cluster", "-n", "--service-node", "--service-type", "--service-meta", "--feature-gates",
         "--drain-time-s", "-f", "--log-format", "--log-path":
        _ = value()
    default: usage()
    }
    i += 1
}

switch command {
case "version", "-v", "--version":
    print(TernVersion.description)
    exit(0)
case "reload":
    // The running process reads the file itself; checking it here first gives the errors to the
    // operator's terminal (the running one refuses an invalid file as well, and logs why).
    guard let path = configPath else { usage() }
    let result = ConfigLoader.load(path: path)
    for e in result.diagnostics.errors { printError("error: \(e)") }
    guard let plan = result.plan else { printError("config \(path) is invalid; nothing reloaded"); exit(1) }
    let pidFile = plan.pidFile ?? (plan.upgradeDirectory ?? HotUpgrade.defaultDirectory(configPath: path)) + "/tern.pid"
    guard let pid = PIDFile.read(pidFile), kill(pid, 0) == 0 else {
        printError("error: no running Tern found for \(path) (pid file \(pidFile))")
        exit(1)
    }
    guard kill(pid, SIGHUP) == 0 else { printError("error: cannot signal pid \(pid): \(String(cString: strerror(errno)))"); exit(1) }
    print("asked Tern (pid \(pid)) to reload \(path); its log says what it applied")
    exit(0)
case "validate", "start":
    guard let path = configPath else { usage() }
    let result = ConfigLoader.load(path: path)
    for w in result.diagnostics.warnings { printError("warning: \(w)") }
    for e in result.diagnostics.errors { printError("error: \(e)") }
    guard var plan = result.plan else {
        printError("config \(path) is invalid")
        exit(1)
    }
    if let logLevel { plan.logLevel = logLevel }
    if command == "validate" {
        print("config \(path) is valid: \(plan.listeners.count) listener(s), \(plan.clusters.count) cluster(s)")
        exit(0)
    }
    guard let logger = Logger.open(path: plan.logPath, level: plan.logLevel) else {
        printError("error: cannot open log file \(plan.logPath ?? "")")
        exit(1)
    }
    // The warnings are on stderr already; a log that is stderr too must not repeat them.
    if !logger.writesToStandardError {
        for w in result.diagnostics.warnings { logger.warn("config", w) }
    }
    // STRICT_DNS clusters start with their names' first answers.
    let names = StrictDNSResolver.resolvingNames(plan, logger: logger)
    if let names { plan = names.plan }
    // Hot upgrade: a Tern already running with this uds_dir hands its listening sockets over.
    let upgradeDirectory = plan.upgradeDisabled ? nil : plan.upgradeDirectory ?? HotUpgrade.defaultDirectory(configPath: path)
    var inherited: InheritedListeners?
    if let upgradeDirectory {
        do { inherited = try HotUpgrade.inherit(from: upgradeDirectory, logger: logger) } catch {
            logger.error("upgrade", "\(error)")
            if !logger.writesToStandardError { printError("error: \(error)") }
            exit(1)
        }
    }
    let server = Server(plan: plan, logger: logger, workers: workers, inherited: inherited, configPath: path,
                        resolver: names?.resolver, resolvedHosts: names?.hosts ?? [:])
    let failures = server.start()
    if !failures.isEmpty {
        for f in failures {
            logger.error("server", f)
            if !logger.writesToStandardError || !logger.enabled(.error) { printError("error: \(f)") }
        }
        inherited?.abandon()   // the old process serves on
        exit(1)
    }
    if let inherited {
        if inherited.confirm() {
            server.adoptConnections(from: inherited)
        } else {
            logger.warn("upgrade", "the old process did not acknowledge the take-over; serving anyway")
            inherited.abandon()
        }
    }
    if let upgradeDirectory { server.acceptUpgrades(directory: upgradeDirectory) }
    server.writePIDFile(plan.pidFile ?? upgradeDirectory.map { $0 + "/tern.pid" })
    logger.info("server", "tern \(TernVersion.version) started: \(plan.listeners.count) listener(s)\(inherited == nil ? "" : " (took over from the previous process)")")
    exit(server.waitForSignals())
default:
    usage()
}
