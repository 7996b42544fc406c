import TernFuzzChecks

// One libFuzzer binary for every target in `fuzzTargets`, chosen by TERN_FUZZ_TARGET (the Makefile
// sets it). Built only by `make fuzz` (TERN_FUZZ=1, -sanitize=fuzzer,address). SwiftPM makes this
// module's entry point the process's main, so it starts libFuzzer's driver itself. A broken rule
// is a trap, which libFuzzer records as a crash input.

@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                     _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@_silgen_name("getenv")
func getenv(_ name: UnsafePointer<CChar>) -> UnsafeMutablePointer<CChar>?

nonisolated(unsafe) var selectedCheck: FuzzCheck = { _ in }

@main
enum Harness {
    static func main() {
        let name = getenv("TERN_FUZZ_TARGET").map { String(cString: $0) } ?? ""
        guard let target = fuzzTargets.first(where: { $0.name == name }) else {
            fatalError("set TERN_FUZZ_TARGET to one of: \(fuzzTargets.map(\.name).joined(separator: " "))")
        }
        selectedCheck = target.check
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        _ = runFuzzerDriver(&argc, &argv) { data, size in
            do { try selectedCheck(UnsafeRawBufferPointer(start: data, count: size)) } catch { fatalError("fuzz check failed: \(error)") }
            return 0
        }
    }
}
