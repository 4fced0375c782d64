import Glibc
import QConvCommandLine
import QConvKit

/// `--part K/N`: one part of a job array writes its share of a folder's
/// shards. `auto/N` and `auto` take K (and N) from the scheduler.
enum PartOption {
    /// What the user asked for, before the environment is read.
    enum Request: Equatable, Sendable {
        case explicit(index: Int, count: Int)
        /// K from the scheduler; N given, or from the scheduler too.
        case auto(count: Int?)
    }

    static let option = Option<Request>(
        "--part", "K/N",
        "Write only part K of N of the output folder (a share of its shards, K from 1 to N; the index and side files in every part); "
            + "auto/N or auto: K, and N, from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX.",
        expected: "K/N with 1 <= K <= N, auto/N or auto") { text in request(text) }
    static let spec = option.spec

    static func request(_ text: String) -> Request? {
        let pieces = text.split(separator: "/", omittingEmptySubsequences: false)
        if pieces == ["auto"] { return .auto(count: nil) }
        guard pieces.count == 2, let count = Int(pieces[1]), count >= 1 else { return nil }
        if pieces[0] == "auto" { return .auto(count: count) }
        guard let index = Int(pieces[0]), (1...count).contains(index) else { return nil }
        return .explicit(index: index, count: count)
    }

    /// The part asked for, with K (and N) read from the environment for `auto`.
    static func resolve(_ arguments: ParsedArguments, environment: (String) -> String? = { getenv($0).map { String(cString: $0) } }) throws -> OutputPart? {
        guard let request = try arguments.value(option) else { return nil }
        switch request {
        case let .explicit(index, count):
            return OutputPart(index: index, count: count)
        case let .auto(count):
            let (index, scheduledCount) = try fromScheduler(environment, arguments: arguments)
            guard let n = count ?? scheduledCount else {
                throw arguments.usageError("--part auto: JOB_COMPLETION_INDEX gives K but not N; pass --part auto/N (N = the Job's completions)")
            }
            guard let part = OutputPart(index: index, count: n) else {
                throw arguments.usageError("--part auto/\(n): the scheduler says this is part \(index), which is not in 1...\(n)")
            }
            return part
        }
    }

    /// A part writes shards of a model folder: an OUT ending in .safetensors names one file.
    static func checkFolderOutput(_ part: OutputPart?, output: String) throws {
        guard part != nil, output.hasSuffix(".safetensors") else { return }
        throw UsageError("--part writes shards of a model folder, and \(output) names one .safetensors file: give OUT a folder name")
    }

    /// K (1-based) and, when the scheduler says, N: Slurm's array task (K =
    /// (task id - min) / step + 1, N = task count), or a Kubernetes Indexed Job's
    /// completion index (K = index + 1).
    private static func fromScheduler(_ environment: (String) -> String?, arguments: ParsedArguments) throws -> (Int, Int?) {
        if let id = environment("SLURM_ARRAY_TASK_ID") {
            guard let task = Int(id) else { throw arguments.usageError("--part auto: SLURM_ARRAY_TASK_ID is '\(id)', not a number") }
            let minimum = environment("SLURM_ARRAY_TASK_MIN").flatMap { Int($0) } ?? 0
            // --array=1-15:2 runs tasks 1, 3, ..., 15: part (id - min) / step + 1.
            let step = max(1, environment("SLURM_ARRAY_TASK_STEP").flatMap { Int($0) } ?? 1)
            guard (task - minimum) % step == 0 else {
                throw arguments.usageError("--part auto: SLURM_ARRAY_TASK_ID \(task) is not SLURM_ARRAY_TASK_MIN \(minimum) plus a multiple of SLURM_ARRAY_TASK_STEP \(step)")
            }
            return ((task - minimum) / step + 1, environment("SLURM_ARRAY_TASK_COUNT").flatMap { Int($0) })
        }
        if let index = environment("JOB_COMPLETION_INDEX") {
            guard let completion = Int(index) else { throw arguments.usageError("--part auto: JOB_COMPLETION_INDEX is '\(index)', not a number") }
            return (completion + 1, nil)
        }
        throw arguments.usageError("--part auto: none of SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX is set; pass --part K/N")
    }
}
