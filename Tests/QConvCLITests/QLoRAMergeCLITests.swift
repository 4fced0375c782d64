import Foundation
import XCTest
import QConvKit
import QConvTestSupport

/// `merge-lora --through nf4|fp4|int8` (a QLoRA adapter merged into
/// dequant(quant(W)), kept in 16 bits) and `--compare`, against PEFT's merge
/// of interop/qlora_merge and against qconv's own to-* and dequant.
final class QLoRAMergeCLITests: XCTestCase {
    private let root = Fixtures.path("interop/qlora_merge")
    private var base: String { root + "/base_f16" }
    private var adapter: String { root + "/adapter" }

    @discardableResult
    private func run(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let result = try runQConv(arguments)
        XCTAssertEqual(result.status, 0, result.stderr, file: file, line: line)
        return result
    }

    private func halves(_ file: SafeTensorsFile, _ name: String) throws -> [UInt16] {
        let bytes = try file.bytes(of: XCTUnwrap(file.entry(named: name), name))
        return bytes.withUnsafeBytes { raw in (0..<(bytes.count / 2)).map { raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self) } }
    }

    private func floats(_ file: SafeTensorsFile, _ name: String) throws -> [Float] {
        let bytes = try file.bytes(of: XCTUnwrap(file.entry(named: name), name))
        return bytes.withUnsafeBytes { raw in (0..<(bytes.count / 4)).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) } }
    }

    /// The adapted weights are PEFT's `dequant(W4) + delta` rounded to F16,
    /// bit for bit; with --scale 0 they are bitsandbytes' dequantized base.
    func testThroughNF4IsPEFTsMergeBeforeRequantizing() throws {
        let folder = TemporaryDirectory("qconv-qlora")
        let text = try run(["merge-lora", base, adapter, folder.file("merged"), "--through", "nf4"])
        XCTAssertTrue(text.stdout.hasPrefix("through nf4 (block size 64, double quant): 14 tensors written as dequant(quant(W)) in F16"), text.stdout)
        try run(["merge-lora", base, adapter, folder.file("zero"), "--through", "nf4", "--scale", "0", "--quiet"])
        let reference = try SafeTensorsFile(path: root + "/reference.safetensors")
        let merged = try SafeTensorsFile(path: folder.file("merged/model.safetensors")), zero = try SafeTensorsFile(path: folder.file("zero/model.safetensors"))
        let keys = reference.tensors.map(\.name).filter { $0.hasSuffix(".through_nf4_f32") }.map { String($0.dropLast(".through_nf4_f32".count)) }
        XCTAssertEqual(keys.count, 6)
        for key in keys {
            let expected = try floats(reference, key + ".through_nf4_f32").map { Float16($0).bitPattern }
            XCTAssertEqual(try halves(merged, key), expected, "\(key): PEFT's merge rounded to F16")
            XCTAssertEqual(try halves(zero, key), try halves(reference, key + ".dequant_f16"), "\(key): bitsandbytes' dequant(quant(W))")
        }
        XCTAssertEqual(FileManager.default.contents(atPath: folder.file("merged/config.json")), FileManager.default.contents(atPath: base + "/config.json"))
        // Embeddings, norms and lm_head are not quantized: copied.
        let original = try SafeTensorsFile(path: base + "/model.safetensors")
        for tensor in original.tensors where TensorSelection.isLeftUnquantizedByDefault(tensor.name) {
            XCTAssertEqual(try merged.bytes(of: XCTUnwrap(merged.entry(named: tensor.name))), try original.bytes(of: tensor), tensor.name)
        }
    }

    /// Every way through (nf4, fp4 with its own block size and no double
    /// quantization, int8) writes what `to-*` then `dequant` gives for the
    /// tensors the adapter leaves alone, and for the adapted ones what
    /// `merge-lora --dequantize` into that container gives (to one ulp: that
    /// merge sums the delta's products in another order).
    func testThroughEqualsQuantizingThenMergingDequantized() throws {
        let ways: [([String], [String])] = [(["--through", "nf4"], ["to-nf4"]),
                                            (["--through", "fp4", "--block-size", "128", "--no-double-quant"], ["to-fp4", "--block-size", "128", "--no-double-quant"]),
                                            (["--through", "int8"], ["to-int8", "--outlier-threshold", "0"])]
        for (through, quantize) in ways {
            let folder = TemporaryDirectory("qconv-qlora")
            try run(["merge-lora", base, adapter, folder.file("through.safetensors")] + through + ["--dequantize", "--quiet"])
            try run([quantize[0], base, folder.file("base.qc"), "--quiet"] + quantize.dropFirst())
            try run(["dequant", folder.file("base.qc"), folder.file("dequant.safetensors"), "--quiet"])
            try run(["merge-lora", folder.file("base.qc"), adapter, folder.file("byhand.safetensors"), "--dequantize", "--quiet"])
            let ours = try SafeTensorsFile(path: folder.file("through.safetensors"))
            let dequantized = try SafeTensorsFile(path: folder.file("dequant.safetensors")), byHand = try SafeTensorsFile(path: folder.file("byhand.safetensors"))
            var adapted = 0
            for tensor in ours.tensors {
                let mine = try halves(ours, tensor.name), plain = try halves(dequantized, tensor.name), merged = try halves(byHand, tensor.name)
                if plain == merged {
                    XCTAssertEqual(mine, plain, "\(through): \(tensor.name) is dequant(quant(W))")
                    continue
                }
                adapted += 1
                func ordered(_ bits: UInt16) -> Int { bits & 0x8000 != 0 ? -Int(bits & 0x7FFF) : Int(bits) }
                XCTAssertEqual(mine.count, merged.count, "\(through): \(tensor.name)")
                let worst = zip(mine, merged).map { abs(ordered($0) - ordered($1)) }.max() ?? 0
                XCTAssertLessThanOrEqual(worst, 1, "\(through): \(tensor.name)")
            }
            XCTAssertEqual(adapted, 6, "\(through)")
        }
    }

    /// --compare's figures are those of the three merges written out: the
    /// merge into W16, `--through nf4` (DQ16), and DQ16 quantized in the
    /// bitsandbytes layout and decoded again (Q4), measured here from the
    /// files (to 1%: the merge into W16 sums a single adapter's products its
    /// own way, which moves a few values by one ulp).
    func testCompareFiguresAreThoseOfTheMergesWrittenOut() throws {
        let folder = TemporaryDirectory("qconv-qlora")
        let result = try run(["merge-lora", base, adapter, folder.file("dq16"), "--through", "nf4", "--compare", "--json"])
        let compare = try XCTUnwrap(JSONParser.parse(result.stdout).objectValue?["compare"]?.objectValue)
        try run(["merge-lora", base, adapter, folder.file("w16"), "--quiet"])
        try run(["to-nf4", folder.file("dq16"), folder.file("q4"), "--format", "hf", "--quiet"])
        try run(["dequant", folder.file("q4"), folder.file("q4-decoded"), "--quiet"])
        let files = try ["w16", "dq16", "q4-decoded"].map { try SafeTensorsFile(path: folder.file($0 + "/model.safetensors")) }
        func values(_ file: SafeTensorsFile, _ name: String) throws -> [Float] {
            try halves(file, name).map { Float(Float16(bitPattern: $0)) }
        }
        func rmse(_ x: [Float], _ y: [Float]) -> Double {
            (zip(x, y).reduce(0.0) { $0 + pow(Double($1.0) - Double($1.1), 2) } / Double(x.count)).squareRoot()
        }
        let tensors = try XCTUnwrap(compare["tensors"]?.arrayValue).compactMap(\.objectValue)
        XCTAssertEqual(tensors.count, 6)
        for tensor in tensors {
            let name = try XCTUnwrap(tensor["name"]?.stringValue)
            let (w16, dq16, q4) = (try values(files[0], name), try values(files[1], name), try values(files[2], name))
            for (key, measured) in [("w16_vs_dq16", rmse(w16, dq16)), ("dq16_vs_q4", rmse(dq16, q4)), ("w16_vs_q4", rmse(w16, q4))] {
                let reported = try XCTUnwrap(tensor[key]?.objectValue?["rmse"]?.numberValue?.doubleValue, "\(name) \(key)")
                XCTAssertEqual(reported, measured, accuracy: 0.01 * measured, "\(name) \(key)")
            }
        }
    }

    /// --compare measures the three merges per changed tensor and overall;
    /// the JSON carries every figure. A container BASE compares DQ16 and Q4.
    func testCompareMeasuresTheThreeMerges() throws {
        let folder = TemporaryDirectory("qconv-qlora")
        let result = try run(["merge-lora", base, adapter, folder.file("merged"), "--through", "nf4", "--compare", "--json"])
        let report = try XCTUnwrap(JSONParser.parse(result.stdout).objectValue)
        XCTAssertEqual(report["through"]?.objectValue?["quantization"]?.stringValue, "nf4")
        XCTAssertEqual(report["through"]?.objectValue?["tensors"]?.numberValue?.intValue, 14)
        let compare = try XCTUnwrap(report["compare"]?.objectValue)
        let tensors = try XCTUnwrap(compare["tensors"]?.arrayValue)
        XCTAssertEqual(tensors.count, 6)
        for tensor in tensors.compactMap(\.objectValue) + [try XCTUnwrap(compare["overall"]?.objectValue)] {
            let delta = try XCTUnwrap(tensor["delta_rms"]?.numberValue?.doubleValue)
            let pairs = try ["w16_vs_dq16", "dq16_vs_q4", "w16_vs_q4"].map { try XCTUnwrap(tensor[$0]?.objectValue?["rmse"]?.numberValue?.doubleValue) }
            XCTAssertGreaterThan(delta, 0)
            // nf4 noise is a good part of the delta here, and the re-quantized merge is farthest from W16.
            XCTAssertTrue(pairs.allSatisfy { $0 > 0.05 * delta && $0 < delta }, "\(tensor)")
            XCTAssertGreaterThan(pairs[2], pairs[0])
        }
        XCTAssertEqual(compare["skipped"]?.arrayValue, [])

        try run(["to-nf4", base, folder.file("base.qc"), "--quiet"])
        let container = try run(["merge-lora", folder.file("base.qc"), adapter, "--dry-run", "--compare"])
        XCTAssertTrue(container.stdout.contains("DELTA RMS  DQ16 vs Q4\n"), container.stdout)
        XCTAssertFalse(container.stdout.contains("W16"), container.stdout.components(separatedBy: "\n\n").last ?? "")
    }

    func testThroughOptionsAreChecked() throws {
        let folder = TemporaryDirectory("qconv-qlora")
        try run(["to-nf4", base, folder.file("base.qc"), "--quiet"])
        let cases: [([String], String)] = [
            ([folder.file("base.qc"), adapter, folder.file("o"), "--through", "nf4"], "--through needs a 16-bit BASE"),
            ([base, adapter, folder.file("o"), "--compare"], "--compare goes with --through or a container BASE"),
            ([base, adapter, folder.file("o"), "--block-size", "128"], "--block-size and --no-double-quant go with --through"),
            ([base, adapter, folder.file("o"), "--through", "int8", "--no-double-quant"], "not int8"),
            ([base, adapter, folder.file("o"), "--through", "nf4", "--block-size", "100"], "--block-size must be one of"),
            ([base, adapter, folder.file("o"), "--through", "q4"], "--through expects nf4, fp4 or int8"),
            ([base, adapter, folder.file("o"), "--dequantize"], "--dequantize needs a qconv container or a bitsandbytes checkpoint as BASE (or --through)"),
        ]
        for (arguments, message) in cases {
            let result = try runQConv(["merge-lora"] + arguments)
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.file("o")))
    }
}
