import QConvKit

/// `qconv merge-lora BASE ADAPTER OUT`: PEFT's `merge_and_unload()` without torch.
enum MergeLoRACommand: Command {
    static let spec = CommandSpec(
        name: "merge-lora",
        abstract: "Merge a PEFT LoRA adapter into base weights (safetensors or a qconv container).",
        positionals: [
            ("BASE", "The base model: a .safetensors file, a model folder (sharded or not), or a qconv container."),
            ("ADAPTER", "A PEFT adapter folder (adapter_config.json + adapter_model.safetensors)."),
            ("OUT", "Where to write the merged model: a file for a file BASE, a folder for a folder (not needed with --dry-run)."),
        ],
        optionalPositionals: 1,
        options: [
            .value("--scale", "S", "Multiply every LoRA delta by S (default 1)."),
            .flag("--dry-run", "Only check the adapter against BASE and list the tensors that would change."),
            .flag("--allow-nonfinite", "Write merged tensors even when they hold NaN or infinity."),
            .flag("--dequantize", "With a container BASE: write safetensors (a file if OUT ends in .safetensors, else a model folder) instead of a container."),
            .value("--dtype", "T", "With --dequantize: output dtype of float tensors, f32, f16 or bf16 (default: each tensor's source dtype)."),
            CommonOptions.json,
            CommonOptions.quiet,
            CommonOptions.force,
            CommonOptions.threads,
        ],
        discussion: """
            The merge follows PEFT's merge_and_unload() (LoRA, rsLoRA, rank/alpha patterns, DoRA, fan_in_fan_out,
            embeddings, lora_bias, modules_to_save): deltas are computed in float32 and each merged tensor is
            rounded to its dtype once. OUT mirrors BASE: same shard files, index, metadata and auxiliary files;
            tensors the adapter does not touch are copied byte for byte. Adapter keys are matched to base tensors
            directly or, for an adapter trained on a differently wrapped model, with a common prefix added or
            removed. Nothing is written when any adapter tensor does not fit.
            With a qconv container as BASE (QLoRA), each changed tensor is dequantized, merged and quantized
            again with its own scheme and parameters, and OUT is a container; other tensors are copied as stored.
            """
    )

    static func run(_ arguments: ParsedArguments, console: Console) throws -> Int32 {
        let basePath = arguments.positionals[0]
        let adapterPath = arguments.positionals[1]
        let dryRun = arguments.flag("--dry-run")
        let scale = try arguments.number("--scale") ?? 1
        let isContainer = ContainerFile.isContainer(path: basePath)
        var dtype: DType?
        if let name = arguments.value("--dtype") {
            guard let parsed = DType(commandLineName: name) else { throw arguments.usageError("--dtype must be f32, f16 or bf16, got '\(name)'") }
            guard arguments.flag("--dequantize") else { throw arguments.usageError("--dtype goes with --dequantize") }
            dtype = parsed
        }
        if arguments.flag("--dequantize") && !isContainer {
            throw arguments.usageError("--dequantize needs a qconv container as BASE")
        }
        let adapter = try LoRAAdapter(path: adapterPath)

        let summary: LoRAMergeSummary
        if dryRun {
            if isContainer {
                let container = try ContainerFile(path: basePath)
                let plan = try LoRAMerger.plan(container: container, adapter: adapter, scale: scale)
                summary = LoRAMergeSummary(plan: plan, base: container.path, output: nil, baseTensorCount: container.tensors.count)
            } else {
                let base = try Checkpoint(path: basePath)
                let plan = try LoRAMerger.plan(base: base, adapter: adapter, scale: scale)
                summary = LoRAMergeSummary(plan: plan, base: base.path, output: nil, baseTensorCount: base.tensors.count)
            }
        } else {
            guard arguments.positionals.count == 3 else { throw arguments.usageError("missing argument OUT (or pass --dry-run)") }
            var options = LoRAMergeOptions()
            options.scale = scale
            options.allowNonfinite = arguments.flag("--allow-nonfinite")
            options.threads = try arguments.threads()
            options.overwrite = arguments.flag("--force")
            options.showProgress = !arguments.flag("--quiet") && !arguments.flag("--json")
            if isContainer {
                summary = try LoRAMerger.merge(container: try ContainerFile(path: basePath), adapter: adapter, to: arguments.positionals[2],
                                               options: options, dequantize: arguments.flag("--dequantize"), dtype: dtype)
            } else {
                summary = try LoRAMerger.merge(base: try Checkpoint(path: basePath), adapter: adapter, to: arguments.positionals[2], options: options)
            }
        }

        if arguments.flag("--json") {
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
        var lines = [
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
