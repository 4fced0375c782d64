import Glibc
import QConvKit

/// `--part K/N`: the model converted in parts (`to-nf4 --format hf`, the
/// bitsandbytes layout a job array writes), against one run on the same cores.
enum JobArrayParts {
    static let shardSize = "25MB"

    static func run(settings: Settings, base: String, work: String) {
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let out = work + "/parts"
        defer { FileSystem.removeItem(out) }
        var one = 0.0
        for extra in [[], ["--no-double-quant"]] {
            let command = [settings.qconv, "to-nf4", base, out, "--format", "hf", "--max-shard-size", shardSize, "--quiet"] + extra
            one = atOnce(command, title: "`to-nf4 --format hf --max-shard-size \(shardSize)\(extra.map { " " + $0 }.joined())`",
                         settings: settings, base: base, out: out, cores: cores)
            if extra.isEmpty { partAlone(command, one: one, settings: settings, base: base, out: out, cores: cores) }
        }
    }

    /// One run against the two parts run at once; returns the one run's time.
    private static func atOnce(_ command: [String], title: String, settings: Settings, base: String, out: String, cores: Int) -> Double {
        func both(_ extra: [String]) -> [String] {
            let quoted = (command + extra).map { "'\($0)'" }.joined(separator: " ")
            return ["/bin/sh", "-c", "\(quoted) --part 1/2 & a=$!; \(quoted) --part 2/2 & b=$!; wait $a && wait $b"]
        }
        let weights = base + "/model.safetensors"
        let rows = [
            timeAgainstCopy("one run, \(cores) threads", command, output: out, copySource: weights, runs: settings.runs, targetRatio: nil, targetRSS: nil),
            timeAgainstCopy("parts 1/2 and 2/2 at once, 1 thread each", both(["--threads", "1"]), output: out, copySource: weights,
                            runs: settings.runs, targetRatio: nil, targetRSS: nil),
            timeAgainstCopy("parts 1/2 and 2/2 at once, \(cores) threads each", both([]), output: out, copySource: weights,
                            runs: settings.runs, targetRatio: nil, targetRSS: nil),
        ]
        let one = rows[0].seconds
        print("\n### Job array parts: \(title) in parts on this machine\n")
        print("| run | median time | `cp` (same run) | ratio to one run | peak RSS (largest process) | target | met |")
        print("|---|---:|---:|---:|---:|---|---|")
        for (i, row) in rows.enumerated() {
            let target = i == 0 ? "-" : "≤ 1.05 × one run"
            let met = i == 0 ? "-" : settings.quick ? "- (1.07 GB model only)" : !row.failed && row.seconds <= one * 1.05 ? "yes" : "NO"
            print("| \(row.command) | \(fixed(row.seconds, 3)) s | \(fixed(row.copySeconds, 3)) s | \(fixed(row.seconds / one, 2)) | \(megabytes(row.peakRSS)) | \(target) | \(met) |")
        }
        return one
    }

    /// Part 1 of N alone, for N = 1, 2, 4, 8.
    private static func partAlone(_ command: [String], one: Double, settings: Settings, base: String, out: String, cores: Int) {
        let weights = base + "/model.safetensors"
        let rows = [1, 2, 4, 8].map { n in
            timeAgainstCopy("part 1/\(n) alone", command + ["--part", "1/\(n)"], output: out, copySource: weights, runs: settings.runs,
                            targetRatio: nil, targetRSS: nil)
        }
        print("\nThe time of one part against N (part 1 of N alone, \(cores) threads; a perfect split takes 1/N of one run):\n")
        print("| N | part 1/N | × one run | 1/N | peak RSS |")
        print("|---:|---:|---:|---:|---:|")
        for (row, n) in zip(rows, [1, 2, 4, 8]) {
            print("| \(n) | \(fixed(row.seconds, 3)) s | \(fixed(row.seconds / one, 2)) | \(fixed(1 / Double(n), 2)) | \(megabytes(row.peakRSS)) |")
        }
    }
}
