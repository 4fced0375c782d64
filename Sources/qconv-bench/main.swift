import Glibc
import QConvCommandLine
import QConvKit

// qconv-bench: times qconv's commands against `cp` of the same file, and
// against the peer pipelines (bitsandbytes, PEFT) when they are installed.
// See docs/BENCHMARKS.md.

struct Settings {
    var quick = false
    var runs = 3
    var work = "bench-work"
    var qconv = ""
    var sweep = false
    var peersDirectory = "../shared/peers"
    var python = (getenv("HOME").map { String(cString: $0) } ?? "/root") + "/peers/bin/python"
    /// nil: run the peers unless `--quick` (they take most of a minute to import torch).
    var usePeers: Bool?
    var threads: Int?
    var kernelsOnly = false
    /// Only the merges of several adapters (and their peer).
    var mergesOnly = false
    /// Only the job array parts.
    var partsOnly = false
}

/// The command line of qconv-bench, read with the same typed options as qconv's.
enum BenchOptions {
    static let quick = Flag("--quick", "A 0.13 GB model and 1 run each, no peers: finishes in under a minute.")
    static let runs = Option<Int>("--runs", "N", "Runs per command (median reported; default 3).", in: 1...1000)
    static let work = Option<String>("--work", "DIR", "Where models and outputs go (default ./bench-work).")
    static let qconv = Option<String>("--qconv", "PATH", "The qconv binary (default: next to this program; build with -c release).")
    static let threads = Option<Int>("--threads", "N", "Threads for qconv (default: every core).", in: 1...1024)
    static let sweep = Flag("--sweep", "Also convert 0.25, 0.5, 1 and 2 GB models: time and peak RSS against size.")
    static let peers = Option<String>("--peers", "DIR", "The peer pipelines (default ../shared/peers).")
    static let python = Option<String>("--python", "PATH", "A Python with torch, bitsandbytes, peft, transformers (default ~/peers/bin/python).")
    static let noPeers = Flag("--no-peers", "Skip the peer pipelines.")
    static let withPeers = Flag("--with-peers", "Run them with --quick too.")
    static let kernels = Flag("--kernels", "Only measure the single-thread throughput of the kernels.")
    static let merges = Flag("--merges", "Only the merges of three adapters (cat, svd) and PEFT's svd merge.")
    static let parts = Flag("--parts", "Only the job array rows: to-nf4 --format hf in parts (--part K/N) against one run.")

    static let spec = CommandSpec(
        program: "qconv-bench", name: "", abstract: "Times qconv's commands against cp and the peer pipelines (docs/BENCHMARKS.md).",
        options: [quick.spec, runs.spec, work.spec, qconv.spec, threads.spec, sweep.spec, peers.spec, python.spec, noPeers.spec,
                  withPeers.spec, kernels.spec, merges.spec, parts.spec])
}

/// Reads the command line; a usage error (an unknown option, a bad number) exits 2.
func parseSettings() -> Settings {
    let arguments = Array(CommandLine.arguments.dropFirst())
    if arguments.contains("--help") || arguments.contains("-h") {
        print(BenchOptions.spec.help)
        exit(0)
    }
    do {
        let parsed = try ParsedArguments.parse(arguments, spec: BenchOptions.spec)
        var settings = Settings()
        settings.quick = parsed[BenchOptions.quick]
        settings.runs = try parsed.value(BenchOptions.runs) ?? (settings.quick ? 1 : 3)
        settings.work = try parsed.value(BenchOptions.work) ?? settings.work
        settings.threads = try parsed.value(BenchOptions.threads)
        settings.sweep = parsed[BenchOptions.sweep]
        settings.peersDirectory = try parsed.value(BenchOptions.peers) ?? settings.peersDirectory
        settings.python = try parsed.value(BenchOptions.python) ?? settings.python
        if parsed[BenchOptions.noPeers] { settings.usePeers = false }
        if parsed[BenchOptions.withPeers] { settings.usePeers = true }
        settings.kernelsOnly = parsed[BenchOptions.kernels]
        settings.mergesOnly = parsed[BenchOptions.merges]
        settings.partsOnly = parsed[BenchOptions.parts]
        settings.qconv = try parsed.value(BenchOptions.qconv)
            ?? FileSystem.join(FileSystem.directoryName(of: CommandLine.arguments[0]), "qconv")
        return settings
    } catch let error as UsageError {
        fputs("qconv-bench: error: \(error.message.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\n  "))\n", stderr)
        exit(UsageError.exitCode)
    } catch {
        fputs("qconv-bench: error: \(error)\n", stderr)
        exit(UsageError.exitCode)
    }
}

struct Row {
    var command: String
    var seconds: Double
    var copySeconds: Double
    var peakRSS: UInt64
    var targetRatio: Double?
    var targetRSS: UInt64?
    var failed = false

    var ratio: Double { copySeconds > 0 ? seconds / copySeconds : 0 }
    var met: Bool {
        !failed && (targetRatio.map { ratio <= $0 } ?? true) && (targetRSS.map { peakRSS <= $0 } ?? true)
    }
}

func megabytes(_ bytes: UInt64) -> String { fixed(Double(bytes) / 1e6, 0) + " MB" }

func fixed(_ value: Double, _ decimals: Int) -> String {
    var buffer = [CChar](repeating: 0, count: 64)
    _ = withVaList([value]) { vsnprintf(&buffer, 64, "%.\(decimals)f", $0) }
    return String(cString: buffer)
}

func log(_ text: String) { fputs(text + "\n", stderr) }

/// Writes every dirty page to disk before a timed run, so that no run pays
/// for the write-back of the one before it (the page cache keeps the inputs).
func settle() { sync() }

/// Runs `command` and `cp` alternately `runs` times; medians of each.
func timeAgainstCopy(_ name: String, _ command: [String], output: String, copySource: String, runs: Int,
                     targetRatio: Double?, targetRSS: UInt64?) -> Row {
    var times: [Double] = [], copies: [Double] = [], peak: UInt64 = 0, failed = false
    let copyTarget = FileSystem.directoryName(of: copySource) + "/copy.bin"
    for run in 0..<runs {
        FileSystem.removeItem(copyTarget)
        settle()
        copies.append(Runner.measure(["cp", copySource, copyTarget]).seconds)
        FileSystem.removeItem(copyTarget)
        if !output.isEmpty { FileSystem.removeItem(output) }
        settle()
        let measured = Runner.measure(command)
        if measured.status != 0 {
            log("  \(name) run \(run + 1) failed with exit \(measured.status): \(command.joined(separator: " "))")
            failed = true
        }
        times.append(measured.seconds)
        peak = max(peak, measured.peakRSSBytes)
        log("  \(name) run \(run + 1): \(fixed(measured.seconds, 3)) s, cp \(fixed(copies.last!, 3)) s, peak RSS \(megabytes(measured.peakRSSBytes))")
    }
    return Row(command: name, seconds: median(times), copySeconds: median(copies), peakRSS: peak,
               targetRatio: targetRatio, targetRSS: targetRSS, failed: failed)
}

/// - Parameter judged: whether the targets apply (they are set for the
///   1.07 GB model; on the quick model the start-up cost of each command
///   weighs more, so its ratios are shown but not judged).
func printTable(_ rows: [Row], title: String, judged: Bool = true) {
    print("\n### \(title)\n")
    print("| command | median time | `cp` (same run) | ratio to `cp` | peak RSS | target | met |")
    print("|---|---:|---:|---:|---:|---|---|")
    for row in rows {
        var target: [String] = []
        if let ratio = row.targetRatio { target.append("≤ \(fixed(ratio, 1)) × cp") }
        if let rss = row.targetRSS { target.append("≤ \(megabytes(rss))") }
        let met = !judged && !row.failed ? "- (1.07 GB model only)" : row.met ? "yes" : "NO"
        print("| \(row.command) | \(fixed(row.seconds, 3)) s | \(fixed(row.copySeconds, 3)) s | \(fixed(row.ratio, 2)) | \(megabytes(row.peakRSS)) | \(target.joined(separator: ", ")) | \(met) |")
    }
}

func writeConfig(_ model: SyntheticModel, to path: String) throws {
    let config: JSONValue = .object([
        "architectures": .array(["LlamaForCausalLM"]), "model_type": "llama", "hidden_size": .int(model.hidden),
        "intermediate_size": .int(model.intermediate), "num_hidden_layers": .int(model.layers), "num_attention_heads": 16,
        "num_key_value_heads": 16, "vocab_size": .int(model.vocabulary), "max_position_embeddings": 2048,
        "rms_norm_eps": .double(1e-6), "tie_word_embeddings": false, "torch_dtype": "float16",
    ])
    let writer = try FileSystem.createFile(path)
    try writer.write(JSONWriter.serialize(config, style: .indented) + "\n")
    try writer.close()
}

/// Writes the model folder (model.safetensors + config.json) unless it is already there.
func prepareModel(_ model: SyntheticModel, in folder: String) throws {
    let weights = folder + "/model.safetensors"
    if FileSystem.size(of: weights) == UInt64(model.byteCount + SafeTensorsWriter.headerBytes(tensors: model.tensors, metadata: [("format", "pt")]).count + 8) {
        return
    }
    FileSystem.removeItem(folder)
    mkdir(folder, 0o755)
    log("writing \(weights) (\(megabytes(UInt64(model.byteCount))))")
    try model.write(to: weights)
    try writeConfig(model, to: folder + "/config.json")
}

func run() throws {
    let settings = parseSettings()
    if settings.kernelsOnly {
        KernelThroughput.run()
        return
    }
    guard FileSystem.kind(of: settings.qconv) == .file else {
        log("qconv-bench: no qconv binary at \(settings.qconv); run `swift build -c release` first or pass --qconv")
        exit(2)
    }
    mkdir(settings.work, 0o755)
    let work = FileSystem.canonicalPath(settings.work)
    let model = settings.quick ? SyntheticModel.quick : SyntheticModel.standard
    let base = work + "/base"
    let adapter = work + "/adapter"
    try prepareModel(model, in: base)
    if FileSystem.kind(of: adapter + "/adapter_model.safetensors") != .file {
        log("writing \(adapter)")
        try model.writeAdapter(to: adapter, rank: 16)
    }
    let weights = base + "/model.safetensors"
    let q = settings.qconv
    let threads = settings.threads.map { ["--threads", String($0)] } ?? []
    let mb300: UInt64 = 300_000_000

    print("## qconv-bench")
    print("")
    print("- model: synthetic Llama, hidden \(model.hidden), \(model.layers) layers, intermediate \(model.intermediate), vocabulary \(model.vocabulary), F16, \(megabytes(FileSystem.size(of: weights) ?? 0))")
    print("- machine: \(machineDescription())")
    print("- runs per command: \(settings.runs) (medians); `cp` runs alternate with the command")
    if settings.mergesOnly {
        try runMultiAdapterMerges(settings: settings, model: model, base: base, firstAdapter: adapter, work: work, threads: threads)
        return
    }
    if settings.partsOnly {
        JobArrayParts.run(settings: settings, base: base, work: work)
        return
    }

    log("preparing a container for dequant and verify")
    Runner.shell("'\(q)' to-nf4 '\(weights)' '\(work)/ref.qc' --force --quiet")
    var rows: [Row] = []
    rows.append(timeAgainstCopy("qconv to-nf4 (double quant)", [q, "to-nf4", weights, work + "/out.qc", "--quiet"] + threads,
                                output: work + "/out.qc", copySource: weights, runs: settings.runs, targetRatio: 1.5, targetRSS: mb300))
    rows.append(timeAgainstCopy("qconv to-nf4 --format hf (bitsandbytes layout)", [q, "to-nf4", base, work + "/out-hf", "--format", "hf", "--quiet"] + threads,
                                output: work + "/out-hf", copySource: weights, runs: settings.runs, targetRatio: 1.5, targetRSS: mb300))
    rows.append(timeAgainstCopy("qconv to-int8", [q, "to-int8", weights, work + "/out.qc", "--quiet"] + threads,
                                output: work + "/out.qc", copySource: weights, runs: settings.runs, targetRatio: 1.5, targetRSS: mb300))
    rows.append(timeAgainstCopy("qconv merge-lora (r=16, every linear)", [q, "merge-lora", base, adapter, work + "/merged", "--quiet"] + threads,
                                output: work + "/merged", copySource: weights, runs: settings.runs, targetRatio: 2.0, targetRSS: mb300))
    rows.append(timeAgainstCopy("qconv dequant", [q, "dequant", work + "/ref.qc", work + "/out.safetensors", "--quiet"] + threads,
                                output: work + "/out.safetensors", copySource: weights, runs: settings.runs, targetRatio: 1.5, targetRSS: mb300))
    rows.append(timeAgainstCopy("qconv verify", [q, "verify", weights, work + "/ref.qc", "--quiet"] + threads,
                                output: "", copySource: weights, runs: settings.runs, targetRatio: 1.5, targetRSS: mb300))
    var inspect = timeAgainstCopy("qconv inspect", [q, "inspect", weights], output: "", copySource: weights, runs: settings.runs,
                                  targetRatio: nil, targetRSS: nil)
    inspect.failed = inspect.failed || inspect.seconds >= 0.05
    rows.append(inspect)
    printTable(rows, title: "qconv against cp", judged: !settings.quick)
    print("\n`qconv inspect` target: under 50 ms: \(fixed(inspect.seconds * 1000, 1)) ms, \(inspect.seconds < 0.05 ? "met" : "NOT met").")
    let layoutRatio = rows[1].seconds / rows[0].seconds
    print("`qconv to-nf4 --format hf` against `qconv to-nf4` (target within 1.2x): \(fixed(layoutRatio, 2))x, \(layoutRatio <= 1.2 ? "met" : "NOT met").")
    try SourceFormats.run(settings: settings, model: model, weights: weights, work: work, threads: threads, reference: rows[0])
    JobArrayParts.run(settings: settings, base: base, work: work)

    if settings.usePeers ?? !settings.quick {
        try runPeers(settings: settings, rows: rows, weights: weights, base: base, adapter: adapter, work: work)
    }
    try runMultiAdapterMerges(settings: settings, model: model, base: base, firstAdapter: adapter, work: work, threads: threads)
    if settings.sweep {
        try runSweep(settings: settings, work: work, threads: threads)
    }
}

/// The peer pipelines on the same files, in the same run.
func runPeers(settings: Settings, rows: [Row], weights: String, base: String, adapter: String, work: String) throws {
    let probe = Runner.measure([settings.python, "-c", "import torch, bitsandbytes, peft, transformers, safetensors"])
    guard probe.status == 0, FileSystem.kind(of: settings.peersDirectory) == .directory else {
        print("\nPeer pipelines skipped: \(settings.python) lacks torch/bitsandbytes/peft/transformers, or \(settings.peersDirectory) is missing.")
        return
    }
    let peers = settings.peersDirectory
    let jobs: [(name: String, qconvRow: Int, command: [String], output: String)] = [
        ("bitsandbytes NF4 + double quant (vs qconv to-nf4 --format hf)", 1, [settings.python, peers + "/bnb_quantize.py", weights, work + "/peer.safetensors", "--mode", "nf4"], work + "/peer.safetensors"),
        ("bitsandbytes int8", 2, [settings.python, peers + "/bnb_quantize.py", weights, work + "/peer.safetensors", "--mode", "int8"], work + "/peer.safetensors"),
        ("PEFT merge_and_unload", 3, [settings.python, peers + "/peft_merge.py", base, adapter, work + "/peer-merged"], work + "/peer-merged"),
    ]
    print("\n### Peers (same files, same run)\n")
    print("| job | peer time | peer peak RSS | qconv time | qconv peak RSS | qconv speed-up | memory ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for job in jobs {
        log("peer: \(job.name)")
        var times: [Double] = [], peak: UInt64 = 0, failed = false
        for _ in 0..<settings.runs {
            FileSystem.removeItem(job.output)
            settle()
            let measured = Runner.measure(job.command)
            failed = failed || measured.status != 0
            times.append(measured.seconds)
            peak = max(peak, measured.peakRSSBytes)
        }
        FileSystem.removeItem(job.output)
        let row = rows[job.qconvRow]
        let time = median(times)
        print("| \(job.name)\(failed ? " (failed)" : "") | \(fixed(time, 2)) s | \(megabytes(peak)) | \(fixed(row.seconds, 2)) s | \(megabytes(row.peakRSS)) | \(fixed(time / row.seconds, 1))× | \(fixed(Double(peak) / Double(max(row.peakRSS, 1)), 1))× |")
    }
    try runLlamaCpp(settings: settings, rows: rows, weights: weights, work: work)
}

/// llama.cpp's own quantizer on the same weights converted to GGUF F16 (conversion not timed).
func runLlamaCpp(settings: Settings, rows: [Row], weights: String, work: String) throws {
    guard Runner.measure([settings.python, "-c", "import llama_cpp, gguf"]).status == 0 else {
        print("\nllama.cpp skipped: \(settings.python) lacks llama-cpp-python and gguf.")
        return
    }
    let gguf = work + "/model-f16.gguf"
    if FileSystem.kind(of: gguf) != .file {
        log("converting the model to GGUF F16 for llama.cpp")
        guard Runner.measure([settings.python, settings.peersDirectory + "/synthetic_to_gguf.py", weights, gguf]).status == 0 else {
            print("\nllama.cpp skipped: converting to GGUF failed.")
            return
        }
    }
    for (kind, row) in [("Q4_0", rows[0]), ("Q8_0", rows[2])] {
        var times: [Double] = [], peak: UInt64 = 0
        for _ in 0..<settings.runs {
            FileSystem.removeItem(work + "/peer.gguf")
            settle()
            let measured = Runner.measure([settings.python, settings.peersDirectory + "/llama_quantize.py", gguf, work + "/peer.gguf", kind])
            times.append(measured.seconds)
            peak = max(peak, measured.peakRSSBytes)
        }
        FileSystem.removeItem(work + "/peer.gguf")
        let time = median(times)
        print("| llama.cpp \(kind) (vs qconv \(kind == "Q4_0" ? "to-nf4" : "to-int8")) | \(fixed(time, 2)) s | \(megabytes(peak)) | \(fixed(row.seconds, 2)) s | \(megabytes(row.peakRSS)) | \(fixed(time / row.seconds, 1))× | \(fixed(Double(peak) / Double(max(row.peakRSS, 1)), 1))× |")
    }
}

/// Converts models of growing size: time should grow linearly, RSS stay flat.
func runSweep(settings: Settings, work: String, threads: [String]) throws {
    print("\n### Size sweep: `qconv to-nf4`\n")
    print("| model | time | time per GB | peak RSS |")
    print("|---:|---:|---:|---:|")
    for gigabytes in [0.25, 0.5, 1.0, 2.0] {
        let model = SyntheticModel.sized(gigabytes * 1e9)
        let folder = work + "/sweep-\(gigabytes)"
        try prepareModel(model, in: folder)
        let weights = folder + "/model.safetensors"
        var times: [Double] = [], peak: UInt64 = 0
        for _ in 0..<settings.runs {
            FileSystem.removeItem(work + "/sweep.qc")
            settle()
            let measured = Runner.measure([settings.qconv, "to-nf4", weights, work + "/sweep.qc", "--quiet"] + threads)
            times.append(measured.seconds)
            peak = max(peak, measured.peakRSSBytes)
        }
        FileSystem.removeItem(work + "/sweep.qc")
        let size = Double(FileSystem.size(of: weights) ?? 0) / 1e9
        print("| \(fixed(size, 2)) GB (\(model.layers) layers) | \(fixed(median(times), 2)) s | \(fixed(median(times) / size, 2)) s | \(megabytes(peak)) |")
    }
}

func machineDescription() -> String {
    var cpu = "unknown CPU"
    // /proc files report size 0, so read line by line.
    if let file = fopen("/proc/cpuinfo", "r") {
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 512)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(cString: line)
            if text.hasPrefix("model name"), let value = text.split(separator: ":", maxSplits: 1).last {
                cpu = String(value).trimmingCharacters()
                break
            }
        }
    }
    let cores = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    let memory = UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    return "\(cpu), \(cores) cores, \(fixed(Double(memory) / Double(1 << 30), 0)) GiB"
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" || s.last == "\n" { s.removeLast() }
        return String(s)
    }
}

do {
    try run()
} catch {
    fputs("qconv-bench: \(error)\n", stderr)
    exit(1)
}
