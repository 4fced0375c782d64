import QConvCommandLine
import QConvKit

/// `merge-lora`'s options for QLoRA adapters: merging through the
/// quantization the adapter was trained on, and comparing the ways to merge.
enum MergeLoRAThroughOptions {
    static let throughOption = Option<String>("--through", "nf4|fp4|int8",
                                              "With a 16-bit BASE: merge into dequant(quant(W)) as the QLoRA model saw it, written in 16 bits.",
                                              expected: "nf4, fp4 or int8") { ["nf4", "fp4", "int8"].contains($0) ? $0 : nil }
    static let blockSizeOption = Option<Int>("--block-size", "N", "With --through nf4|fp4: elements per block (default 64).", in: 1...Int.max)
    static let noDoubleQuantFlag = Flag("--no-double-quant", "With --through nf4|fp4: absmax values were stored as float32, not double-quantized.")
    static let compareFlag = Flag("--compare",
                                  "With --through or a container BASE: measure how far merging into W16, into dequant(W4) and re-quantized are apart.")

    static let specs = [throughOption.spec, blockSizeOption.spec, noDoubleQuantFlag.spec, compareFlag.spec]

    /// The quantization `--through` names, with its block options.
    static func parse(_ arguments: ParsedArguments) throws -> WeightQuantization? {
        let blockSize = try arguments.value(blockSizeOption), noDoubleQuant = arguments[noDoubleQuantFlag]
        guard let name = try arguments.value(throughOption) else {
            if blockSize != nil || noDoubleQuant { throw arguments.usageError("--block-size and --no-double-quant go with --through nf4 or fp4") }
            return nil
        }
        guard let format = FourBitFormat(rawValue: name) else {
            if blockSize != nil || noDoubleQuant { throw arguments.usageError("--block-size and --no-double-quant go with --through nf4 or fp4, not int8") }
            return .int8
        }
        let size = blockSize ?? 64
        guard Blockwise4Bit.supportedBlockSizes.contains(size) else {
            throw arguments.usageError("--block-size must be one of \(Blockwise4Bit.supportedBlockSizes.map(String.init).joined(separator: ", ")), got \(size)")
        }
        return .fourBit(format, blockSize: size, doubleQuant: !noDoubleQuant)
    }

    /// The report's line about the quantization a merge went through.
    static func describe(_ quantization: WeightQuantization, tensorCount: Int, dtypes: String) -> String {
        var text = "through \(quantization.name)"
        if case let .fourBit(_, blockSize, doubleQuant) = quantization { text += " (block size \(blockSize)\(doubleQuant ? ", double quant" : ""))" }
        return text + ": \(tensorCount) tensor\(tensorCount == 1 ? "" : "s") written as dequant(quant(W)) in \(dtypes), the adapter's deltas added to them"
    }

    /// The comparison as a table: the RMS of each difference between two
    /// merges, in units of the delta's RMS.
    static func render(_ comparison: QLoRAComparison) -> String {
        let sixteen = comparison.sixteenToDequantized != nil
        var rows: [[String]] = [["NAME", "DELTA RMS"] + (sixteen ? ["W16 vs DQ16"] : []) + ["DQ16 vs Q4"] + (sixteen ? ["W16 vs Q4"] : [])]
        func ratio(_ metrics: ErrorMetrics?, _ delta: ErrorMetrics) -> [String] {
            guard let metrics else { return [] }
            return [delta.rmse > 0 ? Format.cString("%.3g", metrics.rmse / delta.rmse) : Format.cString("%.3g", metrics.rmse)]
        }
        for tensor in comparison.tensors {
            rows.append([tensor.name, Format.cString("%.3g", tensor.delta.rmse)] + ratio(tensor.sixteenToDequantized, tensor.delta)
                        + ratio(tensor.dequantizedToRequantized, tensor.delta) + ratio(tensor.sixteenToRequantized, tensor.delta))
        }
        let delta = comparison.delta.total
        rows.append(["overall", Format.cString("%.3g", delta.rmse)] + ratio(comparison.sixteenToDequantized?.total, delta)
                    + ratio(comparison.dequantizedToRequantized.total, delta) + ratio(comparison.sixteenToRequantized?.total, delta))
        let merges = sixteen ? "W16 (the 16-bit base), DQ16 (dequant(quant(W)) kept in 16 bits) and Q4 (DQ16 quantized again)"
            : "DQ16 (the dequantized base kept in 16 bits) and Q4 (DQ16 quantized again, as a merge into the container writes it)"
        var lines = ["compared merges into \(merges):", "RMS of each difference, in units of the delta's RMS", "",
                     Format.table(rows, rightAligned: Set(1..<rows[0].count))]
        if !comparison.skipped.isEmpty {
            lines.append("not compared (not quantized, an int8 container tensor, or replaced by the adapter): \(comparison.skipped.count) tensor\(comparison.skipped.count == 1 ? "" : "s")")
        }
        return lines.joined(separator: "\n")
    }

    /// The comparison as the JSON report's `compare` member.
    static func json(_ comparison: QLoRAComparison) -> JSONValue {
        func pair(_ metrics: ErrorMetrics?) -> JSONValue {
            guard let metrics else { return .null }
            return .object([
                "rmse": .double(metrics.rmse), "relative_rmse": finite(metrics.relativeRMSE),
                "max_abs_error": finite(metrics.maxAbsoluteError), "cosine": finite(metrics.cosineSimilarity),
            ])
        }
        func entry(_ name: String, _ delta: ErrorMetrics, _ a: ErrorMetrics?, _ b: ErrorMetrics, _ c: ErrorMetrics?) -> JSONValue {
            .object(["name": .string(name), "delta_rms": .double(delta.rmse), "w16_vs_dq16": pair(a), "dq16_vs_q4": pair(b), "w16_vs_q4": pair(c)])
        }
        return .object([
            "tensors": .array(comparison.tensors.map {
                entry($0.name, $0.delta, $0.sixteenToDequantized, $0.dequantizedToRequantized, $0.sixteenToRequantized)
            }),
            "overall": entry("overall", comparison.delta.total, comparison.sixteenToDequantized?.total, comparison.dequantizedToRequantized.total,
                             comparison.sixteenToRequantized?.total),
            "skipped": .array(comparison.skipped.map(JSONValue.string)),
        ])
    }

    private static func finite(_ value: Double) -> JSONValue { value.isFinite ? .double(value) : .null }
}
