import Foundation
import Testing
import TernFuzzChecks

/// Replays every committed fuzz input (Fuzz/corpus/<target>, the seeds, and Fuzz/crashes/<target>,
/// inputs that once broke a rule) through the same checks the fuzzer runs, without sanitizers.
struct FuzzReplayTests {
    static let fuzzRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz")

    static func inputs(_ target: String, in folder: String) -> [URL] {
        let dir = fuzzRoot.appendingPathComponent(folder).appendingPathComponent(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { dir.appendingPathComponent($0) }
    }

    @Test(arguments: fuzzTargets.map(\.name))
    func replaysCorpusAndCrashes(target: String) throws {
        let check = try #require(fuzzTargets.first { $0.name == target }).check
        let seeds = Self.inputs(target, in: "corpus")
        #expect(!seeds.isEmpty, "no seed corpus in Fuzz/corpus/\(target)")
        for file in seeds + Self.inputs(target, in: "crashes") {
            let data = try Data(contentsOf: file)
            data.withUnsafeBytes { bytes in
                #expect(throws: Never.self, "\(file.lastPathComponent)") { try check(bytes) }
            }
        }
    }

    @Test func everyFuzzFolderBelongsToATarget() throws {
        let names = Set(fuzzTargets.map(\.name))
        for folder in ["corpus", "crashes"] {
            let dir = Self.fuzzRoot.appendingPathComponent(folder)
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] where !entry.hasPrefix(".") {
                #expect(names.contains(entry), "Fuzz/\(folder)/\(entry) names no target in fuzzTargets")
            }
        }
    }
}
