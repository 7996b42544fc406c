// swift-tools-version:6.0
import PackageDescription

// No package dependencies: stdlib, Foundation (config load only), Glibc, OpenSSL via a system library.
// Release keeps overflow, bounds and precondition traps (-O, not -Ounchecked): Tern parses hostile
// bytes, and a bug there must crash, not corrupt memory. The traps cost 4.1 % more instructions
// per HTTP request and 1.4 % per bolt request (callgrind, docs/benchmarks.md), under the 5 % bar.
// Dynamic exclusivity checks stay off, as under -Ounchecked: they cost 2.7x the instructions.
// Cross-module optimization: generic pool code in TernCore (MultiplexConnection<P>) is specialized
// for the bolt codec in TernBolt instead of looking up its generic metadata per call (2,400 lookups
// of PendingCall<P> and MultiplexDecode<P> metadata per 800 calls): 14,925 -> 12,553 instructions
// per bolt call, 15,894 -> 15,647 per HTTP request; resident at start unchanged (12.4 MB).
// `make fuzz` builds with TERN_FUZZ=1: the libFuzzer harness target exists only then (it needs
// libFuzzer, linked by -sanitize=fuzzer), with the default release flags.
let fuzzing = Context.environment["TERN_FUZZ"] != nil
let optimize: [SwiftSetting] = fuzzing ? [] : [.unsafeFlags(["-O", "-wmo", "-enforce-exclusivity=unchecked", "-cross-module-optimization"],
                                                            .when(configuration: .release))]

let package = Package(
    name: "Tern",
    products: [.executable(name: "tern", targets: ["tern"])],
    targets: [
        .target(name: "CTernShim"),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        .target(name: "TernCore", dependencies: ["CTernShim"], swiftSettings: optimize),
        .target(name: "TernHTTP1", dependencies: ["TernCore"], swiftSettings: optimize),
        .target(name: "TernBolt", dependencies: ["TernCore"], swiftSettings: optimize),
        .target(name: "TernTLS", dependencies: ["TernCore", "COpenSSL"], swiftSettings: optimize),
        .target(name: "TernServer", dependencies: ["TernCore", "TernHTTP1", "TernBolt", "TernTLS"], swiftSettings: optimize),
        // Static Swift runtime in release: only the pages Tern touches become resident (≈9 MB
        // idle instead of ≈22 MB with the shared runtime libraries). lld with packed relative
        // relocations (DT_RELR: 5 KB instead of 480 KB of .rela.dyn read at every start), unused
        // sections dropped and identical functions folded (address-safe only): 0.6 MB less
        // resident at start (12.5 instead of 13.1 MB with a TLS listener, docs/benchmarks.md).
        // link-order.txt (scripts/link_order.py) puts the functions a running Tern executes first
        // and together, so its resident code is those pages rather than pieces of all 5 MB.
        .executableTarget(name: "tern", dependencies: ["TernServer"], exclude: ["link-order.txt"], swiftSettings: optimize,
                          linkerSettings: [.unsafeFlags(["-static-stdlib", "-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
                                                          "-Xlinker", "--gc-sections", "-Xlinker", "--icf=safe",
                                                          "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/Sources/tern/link-order.txt",
                                                          "-Xlinker", "--no-warn-symbol-ordering"],
                                                         .when(configuration: .release))]),
        .target(name: "CAllocCounter"),
        .executableTarget(name: "tern-bench", dependencies: ["TernCore", "TernHTTP1", "CAllocCounter", "CTernShim"], swiftSettings: optimize),
        // Fuzz checks: one total function per decoder of untrusted bytes, shared by the libFuzzer
        // harness (Fuzz/Harness) and the replay of the committed corpus in `swift test`.
        .target(name: "TernFuzzChecks", dependencies: ["TernCore", "TernHTTP1", "TernBolt", "TernServer", "TernTLS"]),
        .target(name: "TernTestSupport", dependencies: ["TernCore"], path: "Tests/TernTestSupport"),
        .testTarget(name: "TernCoreTests", dependencies: ["TernCore", "TernTestSupport"]),
        .testTarget(name: "TernHTTP1Tests", dependencies: ["TernHTTP1", "TernCore", "TernTestSupport"]),
        .testTarget(name: "TernBoltTests", dependencies: ["TernBolt", "TernCore", "TernTestSupport"]),
        .testTarget(name: "TernServerTests", dependencies: ["TernServer", "TernCore", "TernTestSupport"], exclude: ["configs"]),
        .testTarget(name: "IntegrationTests", dependencies: ["TernTestSupport"], exclude: ["peers"]),
        .testTarget(name: "FuzzReplayTests", dependencies: ["TernFuzzChecks"]),
    ] + (fuzzing ? [
        // lld: gold stops with an internal error linking the sanitizer runtimes.
        .executableTarget(name: "tern-fuzz", dependencies: ["TernFuzzChecks"], path: "Fuzz/Harness",
                          linkerSettings: [.unsafeFlags(["-use-ld=lld"])]),
    ] : []),
    swiftLanguageModes: [.v6]
)
