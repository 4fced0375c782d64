import QConvCommandLine
import QConvKit

/// `qconv merge-lora BASE ADAPTER [ADAPTER...] OUT`: PEFT's `merge_and_unload()`
/// (after `add_weighted_adapter` for several adapters) without torch.
enum MergeLoRACommand: Command {
    static let scaleOption = Option<Double>("--scale", "S", "Multiply every LoRA delta by S (default 1).")
    static let dryRunFlag = Flag("--dry-run", "Only check the adapter against BASE and list the tensors that would change.")
    static let allowNonfiniteFlag = Flag("--allow-nonfinite", "Write merged tensors even when they hold NaN or infinity.")
    static let dequantizeFlag = Flag("--dequantize",
                                     "With a container BASE: write safetensors (a file if OUT ends in .safetensors, else a model folder) instead of a container.")
    static let dtypeOption = Option<DType>("--dtype", "T",
                                           "With --dequantize: output dtype of float tensors, f32, f16 or bf16 (default: each tensor's source dtype).",
                                           expected: "f32, f16 or bf16") { DType(commandLineName: $0) }

    static let spec = CommandSpec(
        name: "merge-lora",
        abstract: "Merge a PEFT LoRA adapter into base weights (safetensors or a qconv container).",
        positionals: [
            ("BASE", "The base model: a .safetensors file, a model folder (sharded or not), or a qconv container."),
            ("ADAPTER", "A PEFT adapter folder (adapter_config.json + adapter_model.safetensors); several are combined (--method)."),
            ("OUT", "Where to write the merged model: a file for a file BASE, a folder for a folder (not needed with --dry-run)."),
        ],
        optionalPositionals: 1,
        repeatedPositional: 1,
        options: [scaleOption.spec, dryRunFlag.spec, allowNonfiniteFlag.spec, dequantizeFlag.spec, dtypeOption.spec]
            + MergeLoRACombinationOptions.specs
            + [CommonOptions.json, CommonOptions.quiet, OutputOptions.force, CommonOptions.threads],
        discussion: """
            The merge follows PEFT's merge_and_unload() (LoRA, rsLoRA, rank/alpha patterns, DoRA, fan_in_fan_out,
            embeddings, lora_bias, modules_to_save): deltas are computed in float32 and each merged tensor is
            rounded to its dtype once. OUT mirrors BASE: same shard files, index, metadata and auxiliary files;
            tensors the adapter does not touch are copied byte for byte. Adapter keys are matched to base tensors
            directly or, for an adapter trained on a differently wrapped model, with a common prefix added or
            removed. Nothing is written when any adapter tensor does not fit.
            With a qconv container as BASE (QLoRA), each changed tensor is dequantized, merged and quantized
            again with its own scheme and parameters, and OUT is a container; other tensors are copied as stored.
            Several ADAPTERs are combined into one per module as PEFT's add_weighted_adapter does (--method,
            --weights), then merged the same way; --weights or --method with one ADAPTER combines it linearly, as PEFT.
            """
    )

    struct Options: CommandOptions {
        let base: String
        let adapters: [String]
        /// nil: the adapter merged as it is.
        let combination: LoRACombination?
        /// nil: a dry run.
        let output: String?
        let scale: Double
        let allowNonfinite: Bool
        let dequantize: Bool
        let dtype: DType?
        let force: Bool
        let common: CommonOptions
    }

    static func parse(_ arguments: ParsedArguments) throws -> Options {
        let dryRun = arguments[dryRunFlag], dequantize = arguments[dequantizeFlag], dtype = try arguments.value(dtypeOption)
        if dtype != nil && !dequantize { throw arguments.usageError("--dtype goes with --dequantize") }
        let positionals = arguments.positionals
        if !dryRun && positionals.count < 3 { throw arguments.usageError("missing argument OUT (or pass --dry-run)") }
        let adapters = Array(positionals[1..<(dryRun ? positionals.count : positionals.count - 1)])
        return Options(base: positionals[0], adapters: adapters,
                       combination: try MergeLoRACombinationOptions.parse(arguments, adapterCount: adapters.count),
                       output: dryRun ? nil : positionals.last, scale: try arguments.value(scaleOption) ?? 1, allowNonfinite: arguments[allowNonfiniteFlag], dequantize: dequantize,
                       dtype: dtype, force: arguments[OutputOptions.forceFlag], common: try CommonOptions(arguments))
    }

    static func run(_ options: Options, console: Console) throws -> Int32 {
        let base = try Model.open(options.base)
        if options.dequantize && !base.format.storesQuantizedTensors {
            throw UsageError("--dequantize needs a qconv container as BASE\nsee 'qconv merge-lora --help'")
        }
        let adapters = try options.adapters.map { try LoRAAdapter(path: $0) }
        let plan = try LoRAMerger.plan(base: base, adapters: adapters, combination: options.combination, scale: options.scale)
        let summary: LoRAMergeSummary
        if let output = options.output {
            var merge = LoRAMergeOptions()
            merge.scale = options.scale
            merge.allowNonfinite = options.allowNonfinite
            merge.threads = options.common.threads
            merge.overwrite = options.force
            merge.progress = options.common.progress
            summary = try LoRAMerger.merge(plan: plan, base: base, to: output, options: merge, dequantize: options.dequantize, dtype: options.dtype)
        } else {
            summary = LoRAMergeSummary(plan: plan, base: base.path, output: nil, baseTensorCount: base.tensors.count)
        }
        if options.common.json {
            console.printJSON(summary.json())
        } else {
            console.say(render(summary))
        }
        return 0
    }

    static func render(_ summary: LoRAMergeSummary) -> String {
        var rows: [[String]] = [["NAME", "KIND", "DTYPE", "SHAPE", "R", "ALPHA", "SCALE"]]
        for entry in summary.changes {
            var kind = entry.kind
            if entry.isDoRA { kind += " (DoRA)" }
            if entry.replaced && entry.kind != "replacement" { kind += " (replaced)" }
            rows.append([entry.name, kind, entry.dtype.rawValue, "[" + entry.shape.map(String.init).joined(separator: ",") + "]",
                         entry.rank.map(String.init) ?? "-", entry.alpha.map(compact) ?? "-", entry.scale.map(compact) ?? "-"])
        }
        let changed = summary.changes.count
        var lines = summary.combination.map { [MergeLoRACombinationOptions.describe($0, adapterCount: summary.adapters.count)] } ?? []
        lines += [
            "key mapping: \(summary.mapping)",
            summary.output.map { "merged \(changed) tensor\(changed == 1 ? "" : "s") into \($0), copied \(summary.copiedCount) unchanged" }
                ?? "dry run: \(changed) tensor\(changed == 1 ? "" : "s") would change, \(summary.copiedCount) would be copied",
        ]
        if summary.output == nil { lines += ["", Format.table(rows, rightAligned: [4, 5, 6])] }
        return lines.joined(separator: "\n")
    }

    /// 16 -> "16", 1/sqrt(2) -> "0.707107".
    private static func compact(_ value: Double) -> String { Format.cString("%.6g", value) }
}
