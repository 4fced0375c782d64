import QConvCommandLine
import QConvKit

/// `qconv inspect PATH`: what is inside a safetensors file, a model folder or a container.
enum InspectCommand: Command {
    static let tensorsFlag = Flag("--tensors", "List every tensor: name, dtype, shape, parameters, bytes, file.")
    static let statsFlag = Flag("--stats", "Also stream every tensor and show min, max, mean, std, absmax, NaN and Inf counts.")

    static let spec = CommandSpec(
        name: "inspect",
        abstract: "Show what is inside a model: safetensors, a PyTorch .bin, a model folder, a qconv container or a bitsandbytes checkpoint.",
        positionals: [("PATH", "A .safetensors file, a PyTorch .bin, a model folder (sharded or not), a qconv container, or a bitsandbytes checkpoint.")],
        options: [tensorsFlag.spec, statsFlag.spec, CommonOptions.json, CommonOptions.quiet, CommonOptions.threads],
        discussion: "Without --stats only headers are read, so the answer is immediate for files of any size.",
        examples: [
            "qconv inspect Samples/sharded_llama",
            "qconv inspect model-nf4.qc --tensors",
            "qconv inspect model.safetensors --stats --json",
        ]
    )

    struct Options: CommandOptions {
        let path: String
        let listTensors: Bool
        let statistics: Bool
        let common: CommonOptions
    }

    static func parse(_ arguments: ParsedArguments) throws -> Options {
        let statistics = arguments[statsFlag]
        return Options(path: arguments.positionals[0], listTensors: arguments[tensorsFlag] || statistics, statistics: statistics,
                       common: try CommonOptions(arguments))
    }

    static func run(_ options: Options, console: Console) throws -> Int32 {
        let report = try Inspection.inspect(path: options.path, statistics: options.statistics, threads: options.common.threads,
                                            progress: options.common.progress)
        if options.common.json {
            console.printJSON(report.json(includeTensors: options.listTensors))
        } else {
            console.say(render(report, listTensors: options.listTensors, statistics: options.statistics))
        }
        return 0
    }

    /// "a, b, c", or for a long list of shards "first, ..., last (N files)".
    static func abbreviatedList(_ names: [String]) -> String {
        guard names.count > 3, let first = names.first, let last = names.last else { return names.joined(separator: ", ") }
        return "\(first), ..., \(last) (\(names.count) files)"
    }

    static func render(_ report: InspectionReport, listTensors: Bool, statistics: Bool) -> String {
        let text = Format.table(summaryRows(report))
        guard listTensors else { return text }
        return text + "\n\n" + tensorTable(report, statistics: statistics)
    }

    /// The model as a whole: files, counts, the storage's own rows, metadata.
    private static func summaryRows(_ report: InspectionReport) -> [[String]] {
        var rows: [[String]] = [
            ["path", report.path],
            ["format", report.format],
            ["files", abbreviatedList(report.files.map(\.name))],
        ]
        if !report.auxiliaryFiles.isEmpty { rows.append(["other files", report.auxiliaryFiles.joined(separator: ", ")]) }
        rows.append(["tensors", Format.grouped(report.tensorCount)])
        rows.append(["parameters", Format.grouped(report.parameterCount)])
        for (dtype, total) in report.dtypeTotals {
            rows.append(["  \(dtype)", "\(Format.grouped(total.parameters)) in \(total.tensorCount) tensor\(total.tensorCount == 1 ? "" : "s"), \(Format.bytes(total.bytes))"])
        }
        if report.container == nil && report.bitsandbytes == nil {
            rows.append(["tensor data", "\(Format.grouped(report.tensorBytes)) bytes (\(Format.bytes(report.tensorBytes)))"])
        }
        rows.append(["on disk", "\(Format.grouped(report.fileBytes)) bytes (\(Format.bytes(report.fileBytes)))"])
        rows += quantizationRows(report)
        let fp8 = report.tensors.filter { $0.fp8 != nil }
        if !fp8.isEmpty {
            rows.append(["fp8", "\(fp8.count) tensor\(fp8.count == 1 ? "" : "s") stored as FP8 with a scale tensor each, read as their scaled values"])
        }
        if report.metadata.isEmpty {
            rows.append(["metadata", "(none)"])
        } else {
            for (i, entry) in report.metadata.enumerated() {
                rows.append([i == 0 ? "metadata" : "", "\(entry.key): \(entry.value)"])
            }
        }
        return rows
    }

    /// A container's or a bitsandbytes checkpoint's schemes, sizes and settings.
    private static func quantizationRows(_ report: InspectionReport) -> [[String]] {
        var rows: [[String]] = []
        if let container = report.container {
            rows.append(["container", "format version \(container.version)" + (container.writtenBy.map { ", written by \($0)" } ?? "")])
            if case .object(let options)? = container.options {
                rows.append(["options", options.members.map { "\($0.key)=\(describe($0.value))" }.joined(separator: " ")])
            }
            rows.append(["schemes", container.schemes.map { "\($0.scheme): \($0.count)" }.joined(separator: ", ")])
            let ratio = container.sourceTensorBytes > 0 ? Double(report.tensorBytes) * 100 / Double(container.sourceTensorBytes) : 0
            rows.append(["size", "\(Format.bytes(container.sourceTensorBytes)) source -> \(Format.bytes(report.tensorBytes)) stored (\(Format.fixed(ratio, 1))%)"])
            rows.append(["bits/weight", "\(Format.fixed(container.quantizedBitsPerWeight, 3)) quantized tensors, \(Format.fixed(container.bitsPerWeight, 3)) overall"])
        }
        if let bnb = report.bitsandbytes {
            rows.append(["schemes", bnb.schemes.isEmpty ? "none quantized" : bnb.schemes.map { "\($0.scheme): \($0.count)" }.joined(separator: "; ")])
            let ratio = bnb.sourceTensorBytes > 0 ? Double(report.tensorBytes) * 100 / Double(bnb.sourceTensorBytes) : 0
            rows.append(["size", "\(Format.bytes(bnb.sourceTensorBytes)) source -> \(Format.bytes(report.tensorBytes)) stored (\(Format.fixed(ratio, 1))%)"])
            rows.append(["bits/weight", "\(Format.fixed(bnb.quantizedBitsPerWeight, 3)) quantized tensors, \(Format.fixed(bnb.bitsPerWeight, 3)) overall"])
            if case .object(let config)? = bnb.quantizationConfig {
                let shown = config.members.filter { ["quant_method", "load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
                                                     "bnb_4bit_compute_dtype", "llm_int8_skip_modules"].contains($0.key) }
                rows.append(["config", shown.map { "\($0.key)=\(describe($0.value))" }.joined(separator: " ")])
            } else {
                rows.append(["config", "no quantization_config"])
            }
        }
        return rows
    }

    /// One row per tensor (with statistics when asked).
    private static func tensorTable(_ report: InspectionReport, statistics: Bool) -> String {
        let isContainer = report.tensors.contains { $0.scheme != nil }
        var header = ["NAME", "DTYPE", "SHAPE", "PARAMS", "BYTES", "FILE"]
        if isContainer { header = ["NAME", "DTYPE", "SHAPE", "PARAMS", "SCHEME", "BITS/W", "OUTLIERS", "BYTES"] }
        if statistics { header += ["MIN", "MAX", "MEAN", "STD", "ABSMAX", "NAN", "INF"] }
        var table = [header]
        for tensor in report.tensors {
            var row = [tensor.name, tensor.dtype, "[" + tensor.shape.map(String.init).joined(separator: ",") + "]", Format.grouped(tensor.parameters)]
            if isContainer {
                let scheme = tensor.fp8.map { "fp8 \($0.valuesDType.rawValue) \($0.granularityDescription) + \($0.scaleName.split(separator: ".").last ?? "")" }
                    ?? tensor.scheme ?? ""
                row += [scheme, tensor.bitsPerWeight.map { Format.fixed($0, 2) } ?? "",
                        tensor.outlierColumns.map(String.init) ?? "", Format.grouped(tensor.bytes)]
            } else {
                row += [Format.grouped(tensor.bytes), tensor.file]
            }
            if statistics {
                if let s = tensor.statistics, s.finiteCount > 0 {
                    row += [s.min, s.max, s.mean, s.std, s.absmax].map(Format.number) + [String(s.nanCount), String(s.infinityCount)]
                } else if let s = tensor.statistics {
                    row += ["-", "-", "-", "-", "-", String(s.nanCount), String(s.infinityCount)]
                } else {
                    row += ["-", "-", "-", "-", "-", "-", "-"]
                }
            }
            table.append(row)
        }
        var right: Set<Int> = [3]
        if !isContainer { right.insert(4) } else { right.formUnion([5, 6, 7]) }
        if statistics { right.formUnion(Set((header.count - 7)..<header.count)) }
        return Format.table(table, rightAligned: right)
    }

    private static func describe(_ value: JSONValue) -> String {
        switch value {
        case .string(let s): return s
        case .number(let n): return n.text
        case .bool(let b): return b ? "true" : "false"
        case .object(let object) where object.members.count <= 4:
            return object.members.map { "\($0.key):\(describe($0.value))" }.joined(separator: ",")
        default: return JSONWriter.serialize(value)
        }
    }
}
