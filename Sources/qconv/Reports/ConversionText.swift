import QConvKit

/// The text report of `to-nf4`, `to-fp4` and `to-int8`.
enum ConversionText {
    static func report(_ report: ConversionReport) -> String {
        var methodText = method(report.method)
        if report.format != ModelFormat.container.name && report.method == .int8(outliers: .none) {
            methodText += " (bitsandbytes' layout: plain int8 of every row, as bitsandbytes stores it)"
        }
        if report.relaid { methodText += "; stored codes laid out again, not quantized twice" }
        let quantized = report.quantized
        var rows: [[String]] = [
            ["wrote", report.output + (report.files.isEmpty ? "" : " (\(report.format): \(report.files.joined(separator: ", ")))")],
            ["method", methodText],
            ["tensors", "\(report.tensors.count) (\(quantized.count) quantized, \(report.tensors.count - quantized.count) kept as they were)"],
            ["parameters", "\(Format.grouped(report.quantizedParameterCount)) quantized of \(Format.grouped(report.parameterCount))"],
            // Tensor data on both sides, as `inspect` counts it; the files add headers and side files.
            ["size", "\(Format.bytes(report.sourceTensorBytes)) -> \(Format.bytes(report.storedTensorBytes)) of tensor data "
                + "(\(Format.fixed(report.sourceTensorBytes > 0 ? Double(report.storedTensorBytes) * 100 / Double(report.sourceTensorBytes) : 0, 1))%), "
                + "\(Format.bytes(report.outputBytes)) on disk"],
            ["bits/weight", "\(Format.fixed(report.quantizedBitsPerWeight, 3)) over quantized tensors"],
        ]
        if case .int8 = report.method {
            let counts = report.outlierColumnCounts
            rows.append(["outliers", "\(counts.outliers) of \(counts.columns) columns kept in FP16"])
        }
        if !report.embeddedFiles.isEmpty { rows.append(["files", report.embeddedFiles.joined(separator: ", ")]) }
        for (i, file) in report.leftOutFiles.enumerated() { rows.append([i == 0 ? "not carried" : "", "\(file.name) (\(file.reason))"]) }
        if report.format != ModelFormat.container.name && !report.files.contains("config.json") {
            rows.append(["note", "IN has no config.json: put the model's config.json beside the weights, with the quantization_config "
                         + "of 'qconv inspect', before loading them with transformers"])
        }
        if let part = report.part { rows.append(PartText.row(part, output: report.output)) }
        rows.append(["time", "\(Format.fixed(report.seconds, 2)) s"])
        return Format.table(rows)
    }

    /// The method as the reports name it: "nf4, block size 64, double quant".
    static func method(_ method: QuantizationMethod) -> String {
        switch method {
        case let .fourBit(_, blockSize, doubleQuant): return method.schemeName + ", block size \(blockSize)" + (doubleQuant ? ", double quant" : "")
        case let .int8(outliers): return method.schemeName + ", outliers: \(outliers)"
        }
    }

    /// The dry run: the summary, then a row per tensor.
    static func preview(_ preview: ConversionPreview) -> String {
        let quantized = preview.quantized.count
        let ratio = preview.sourceTensorBytes > 0 ? Double(preview.projectedTensorBytes) * 100 / Double(preview.sourceTensorBytes) : 0
        let summary = Format.table([
            ["dry run", "\(preview.method.commandName) of \(preview.input): nothing written"],
            ["method", method(preview.method)],
            ["tensors", "\(preview.tensors.count) (\(quantized) to quantize, \(preview.tensors.count - quantized) kept)"],
            ["size", "\(Format.bytes(preview.sourceTensorBytes)) -> \(Format.bytes(preview.projectedTensorBytes)) of tensor data "
                + "(\(Format.fixed(ratio, 1))%)" + (preview.outliersUncounted ? ", before outlier columns" : "")],
            ["bits/weight", "\(Format.fixed(preview.quantizedBitsPerWeight, 3)) over quantized tensors"],
        ])
        var rows = [["NAME", "DTYPE", "SHAPE", "BECOMES", "WHY", "BYTES", "BITS/W"]]
        for tensor in preview.tensors {
            let becomes: String
            let why: String
            switch tensor.decision {
            case .quantize(let reason): (becomes, why) = (tensor.scheme.name, reason.rawValue)
            case .keep(let reason):
                becomes = tensor.storedDType == tensor.info.dtype ? "kept" : "kept as \(tensor.storedDType.rawValue)"
                why = reason.rawValue
            }
            rows.append([tensor.info.name, tensor.info.dtype.rawValue, "[" + tensor.info.shape.map(String.init).joined(separator: ",") + "]",
                         becomes, why, Format.grouped(tensor.projectedBytes), Format.fixed(tensor.bitsPerWeight, 2)])
        }
        return summary + "\n\n" + Format.table(rows, rightAligned: [5, 6])
    }
}
