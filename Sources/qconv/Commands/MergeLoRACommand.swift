import QConvCommandLine
import QConvKit

/// `qconv merge-lora BASE ADAPTER [ADAPTER...] OUT`: PEFT's `merge_and_unload()`
/// (after `add_weighted_adapter` for several adapters) without torch.
enum MergeLoRACommand: Command {
    static let scaleOption = Option<Double>("--scale", "S", "Multiply every LoRA delta by S (default 1).")
    static let dryRunFlag = Flag("--dry-run", "Only check the adapter against BASE and list the tensors that would change.")
    static let allowNonfiniteFlag = Flag("--allow-nonfinite", "Write merged tensors even when they hold NaN or infinity.")
    static let dequantizeFlag = Flag("--dequantize",
                                     "With a container or bitsandbytes BASE (or --through): write safetensors (a file if OUT ends in .safetensors, else a model folder) as dequant does.")
    static let dtypeOption = Option<DType>("--dtype", "T",
                                           "With --dequantize: output dtype of float tensors, f32, f16 or bf16 (default: each tensor's source dtype).",
                                           expected: "f32, f16 or bf16") { DType(commandLineName: $0) }

    static let spec = CommandSpec(
        name: "merge-lora",
        abstract: "Merge a PEFT LoRA adapter into base weights (safetensors, a qconv container or a bitsandbytes checkpoint).",
        positionals: [
            ("BASE", "The base model: a .safetensors file, a PyTorch .bin, a model folder (sharded or not), a qconv container or a bitsandbytes checkpoint."),
            ("ADAPTER", "A PEFT adapter folder (adapter_config.json + adapter_model.safetensors or adapter_model.bin); several are combined (--method)."),
            ("OUT", "Where to write the merged model: a file for a file BASE, a folder for a folder (not needed with --dry-run)."),
        ],
        optionalPositionals: 1,
        repeatedPositional: 1,
        options: [scaleOption.spec, dryRunFlag.spec, allowNonfiniteFlag.spec, dequantizeFlag.spec, dtypeOption.spec]
            + MergeLoRACombinationOptions.specs + MergeLoRAThroughOptions.specs
            + [DequantCommand.maxShardSizeOption.spec, PartOption.spec,
               CommonOptions.json, CommonOptions.quiet, OutputOptions.force, CommonOptions.threads],
        discussion: """
            The merge follows PEFT's merge_and_unload() (LoRA, rsLoRA, rank/alpha patterns, DoRA, fan_in_fan_out,
            embeddings, lora_bias, modules_to_save): deltas are computed in float32 and each merged tensor is
            rounded to its dtype once. OUT mirrors BASE: same shard files, index, metadata and auxiliary files;
            tensors the adapter does not touch are copied byte for byte (a PyTorch .bin BASE gives safetensors in the
            same layout, shards named as transformers names them). Adapter keys are matched to base tensors
            directly or, for an adapter trained on a differently wrapped model, with a common prefix added or
            removed. Nothing is written when any adapter tensor does not fit.
            With a qconv container as BASE (QLoRA), each changed tensor is dequantized, merged and quantized
            again with its own scheme and parameters, and OUT is a container; other tensors are copied as stored. \
            A bitsandbytes BASE gives a bitsandbytes OUT the same way, in the same layout.
            Several ADAPTERs are combined into one per module as PEFT's add_weighted_adapter does (--method,
            --weights), then merged the same way; --weights or --method with one ADAPTER combines it linearly, as PEFT.
            A QLoRA adapter was trained against dequant(quant(W)): --through merges it into that, kept in 16 bits
            (as a quantized BASE with --dequantize does); --compare says how far that is from the other ways.
            """,
        examples: [
            "qconv merge-lora Samples/lora_llama_basic/base Samples/lora_llama_basic/adapter --dry-run",
            "qconv merge-lora base/ adapter/ merged",
            "qconv merge-lora base/ math/ code/ merged --method ties --weights 0.6,0.4 --density 0.5",
            "qconv merge-lora base/ qlora-adapter/ merged --through nf4",
            "qconv merge-lora model-nf4.qc adapter/ merged --dequantize --dtype f16",
        ]
    )

    struct Options: CommandOptions {
        let base: String
        let adapters: [String]
        /// nil: the adapter merged as it is.
        let combination: LoRACombination?
        /// nil: a dry run.
        let output: String?
        /// A dry run's OUT, given but not written.
        let unwrittenOutput: String?
        let scale: Double
        let allowNonfinite: Bool
        let dequantize: Bool
        let dtype: DType?
        /// --through: the quantization a 16-bit base is merged through.
        let through: WeightQuantization?
        let compare: Bool
        let maxShardSize: UInt64?
        let part: OutputPart?
        let force: Bool
        let common: CommonOptions
    }

    static func parse(_ arguments: ParsedArguments) throws -> Options {
        let dryRun = arguments[dryRunFlag], dequantize = arguments[dequantizeFlag], dtype = try arguments.value(dtypeOption)
        if dtype != nil && !dequantize { throw arguments.usageError("--dtype goes with --dequantize") }
        let positionals = arguments.positionals
        if !dryRun && positionals.count < 3 { throw arguments.usageError("missing argument OUT (or pass --dry-run)") }
        // A dry run may still name OUT, as the command it previews does: a
        // last argument that does not exist is that OUT, not an adapter.
        let hasOutput = !dryRun || (positionals.count >= 3 && !FileSystem.entryExists(positionals[positionals.count - 1]))
        let adapters = Array(positionals[1..<(hasOutput ? positionals.count - 1 : positionals.count)])
        return Options(base: positionals[0], adapters: adapters,
                       combination: try MergeLoRACombinationOptions.parse(arguments, adapterCount: adapters.count),
                       output: dryRun ? nil : positionals.last, unwrittenOutput: dryRun && hasOutput ? positionals.last : nil, scale: try arguments.value(scaleOption) ?? 1, allowNonfinite: arguments[allowNonfiniteFlag],
                       dequantize: dequantize, dtype: dtype, through: try MergeLoRAThroughOptions.parse(arguments),
                       compare: arguments[MergeLoRAThroughOptions.compareFlag],
                       maxShardSize: try arguments.value(DequantCommand.maxShardSizeOption), part: try PartOption.resolve(arguments), force: arguments[OutputOptions.forceFlag], common: try CommonOptions(arguments))
    }

    static func run(_ options: Options, console: Console) throws -> Int32 {
        let base = try Model.open(options.base)
        let quantized = base.format.storesQuantizedTensors
        if options.dequantize && !quantized && options.through == nil {
            throw UsageError("--dequantize needs a qconv container or a bitsandbytes checkpoint as BASE (or --through)\nsee 'qconv merge-lora --help'")
        }
        if options.through != nil && quantized {
            throw UsageError("--through needs a 16-bit BASE; BASE is already quantized (use --dequantize)\nsee 'qconv merge-lora --help'")
        }
        if options.compare && !quantized && options.through == nil {
            throw UsageError("--compare goes with --through or a container BASE\nsee 'qconv merge-lora --help'")
        }
        if base.format == .container && !options.dequantize && (options.part != nil || options.maxShardSize != nil) {
            throw UsageError("--part and --max-shard-size need a folder output: a container BASE merges into one container file "
                             + "(pass --dequantize for a model folder)\nsee 'qconv merge-lora --help'")
        }
        if let output = options.output { try PartOption.checkFolderOutput(options.part, output: output) }
        let adapters = try options.adapters.map { try LoRAAdapter(path: $0) }
        let plan = try LoRAMerger.plan(base: base, adapters: adapters, combination: options.combination, scale: options.scale)
        var summary: LoRAMergeSummary
        if let output = options.output {
            var merge = LoRAMergeOptions()
            merge.scale = options.scale
            merge.allowNonfinite = options.allowNonfinite
            merge.threads = options.common.threads
            merge.overwrite = options.force
            merge.progress = options.common.progress
            merge.maxShardSize = options.maxShardSize
            merge.part = options.part
            summary = try LoRAMerger.merge(plan: plan, base: base, to: output, options: merge, dequantize: options.dequantize, dtype: options.dtype,
                                           through: options.through)
        } else {
            summary = LoRAMergeSummary(plan: plan, base: base.path, output: nil, baseTensorCount: base.tensors.count)
            if let through = options.through {
                let selection = try TensorSelection()
                summary.through = (through, base.tensors.filter { QuantizedBaseTransform.isQuantized($0.info, selection: selection) }.count)
            }
        }
        let comparison = options.compare ? try QLoRAComparison.compare(plan: plan, base: base, through: options.through,
                                                                        threads: options.common.threads, progress: options.common.progress) : nil
        if options.common.json {
            guard case .object(var object) = summary.json() else { return 0 }
            object.append("compare", comparison.map(MergeLoRAThroughOptions.json) ?? .null)
            console.printJSON(.object(object))
        } else {
            var text = render(summary)
            if let comparison { text += "\n\n" + MergeLoRAThroughOptions.render(comparison) }
            if let part = options.part, let output = options.output { text += "\n" + PartText.row(part, output: output).joined(separator: " ") }
            if let unwritten = options.unwrittenOutput { text += "\n(a dry run: nothing written to \(unwritten))" }
            console.say(text)
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
        if let through = summary.through {
            let dtypes = Set(summary.changes.map(\.dtype.rawValue)).sorted().joined(separator: "/")
            lines.append(MergeLoRAThroughOptions.describe(through.quantization, tensorCount: through.tensorCount, dtypes: dtypes.isEmpty ? "their dtype" : dtypes))
        }
        lines += [
            "key mapping: \(summary.mapping)",
            summary.output.map { "merged \(changed) tensor\(changed == 1 ? "" : "s") into \($0), copied \(summary.copiedCount) unchanged" }
                ?? "dry run: \(changed) tensor\(changed == 1 ? "" : "s") would change, \(summary.copiedCount) would be copied",
        ]
        if let tied = summary.untied {
            let made = tied.outputStored ? "" : " (made from \(tied.input), which the base stores for both)"
            lines.append("untied embeddings: the adapter changes \(tied.input) or \(tied.output), so both are written\(made) "
                         + "and config.json says \"tie_word_embeddings\": false")
        }
        if summary.output == nil { lines += ["", Format.table(rows, rightAligned: [4, 5, 6])] }
        return lines.joined(separator: "\n")
    }

    /// 16 -> "16", 1/sqrt(2) -> "0.707107".
    private static func compact(_ value: Double) -> String { Format.cString("%.6g", value) }
}
