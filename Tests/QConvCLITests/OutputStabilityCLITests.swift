import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// Every output of `to-nf4`, `to-fp4`, `to-int8`, `dequant` and `merge-lora`
/// on the samples and fixtures, pinned by the xxHash64 of each file it
/// writes: a refactoring that changes one byte of any of them fails here.
///
/// The digests were recorded with qconv before the format seam was
/// introduced (issue 11). Commands run from the repository root with relative
/// input paths, because a container records its source path as given.
/// `QCONV_PRINT_DIGESTS=1 swift test --filter OutputStability` prints the
/// digests the current code writes.
final class OutputStabilityCLITests: XCTestCase {
    /// A command line (inputs relative to the repository root, `$OUT/` for the
    /// temporary folder), and the digests of the files it writes.
    struct Case {
        let arguments: [String]
        let outputs: [String: String]
    }

    static let cases: [Case] = [
        Case(arguments: ["to-nf4", "Samples/sharded_llama", "$OUT/nf4.qc"], outputs: ["nf4.qc": "93a9fc9eb9ababd3"]),
        Case(arguments: ["to-fp4", "Samples/sharded_llama", "$OUT/fp4.qc", "--no-double-quant", "--block-size", "128"],
             outputs: ["fp4.qc": "78d293cc4fecc74c"]),
        Case(arguments: ["to-fp4", "Samples/sharded_llama", "$OUT/fp4dq.qc"], outputs: ["fp4dq.qc": "063f7dfbcdf335b8"]),
        Case(arguments: ["to-int8", "Samples/sharded_llama", "$OUT/int8.qc"], outputs: ["int8.qc": "67aa8ebc31a635dc"]),
        Case(arguments: ["to-int8", "Samples/sharded_llama", "$OUT/int8abs.qc", "--outlier-threshold", "0.05"],
             outputs: ["int8abs.qc": "1211c150f4f11084"]),
        Case(arguments: ["to-int8", "Tests/Fixtures/quant/int8_outliers_thr6.safetensors", "$OUT/int8o.qc", "--all", "--outlier-rms-multiple", "3"],
             outputs: ["int8o.qc": "c3227a64d2a607d5"]),
        Case(arguments: ["to-nf4", "Tests/Fixtures/quant/nf4_dq_bf16_input.safetensors", "$OUT/bf16.qc", "--all", "--block-size", "32"],
             outputs: ["bf16.qc": "803e7997c3d8824d"]),
        // Patterns became globs (issue 15): the header records "*proj*" where it recorded "proj"; the
        // selection, every part and the dequantized copy below are as before.
        Case(arguments: ["to-nf4", "Tests/Fixtures/lora/lora_llama_bf16_base/base", "$OUT/bf16base.qc", "--only", "*proj*", "--skip", "*k_proj*"],
             outputs: ["bf16base.qc": "175bb47b4c297315"]),
        Case(arguments: ["to-nf4", "Tests/Fixtures/models/hf_fp32_llama", "$OUT/llama.qc"], outputs: ["llama.qc": "7c9c34a47785781c"]),
        Case(arguments: ["to-nf4", "Samples/sharded_llama", "$OUT/n.qc", "--threads", "1"], outputs: ["n.qc": "93a9fc9eb9ababd3"]),
        // dequant: a folder, a file in another dtype, shards, an int8 container.
        Case(arguments: ["dequant", "$OUT/nf4.qc", "$OUT/restored"], outputs: ["restored": "6898ce81673bc7d1"]),
        Case(arguments: ["dequant", "$OUT/nf4.qc", "$OUT/restored.safetensors", "--dtype", "bf16"], outputs: ["restored.safetensors": "c517c428c8298d8e"]),
        Case(arguments: ["dequant", "$OUT/fp4.qc", "$OUT/sharded", "--max-shard-size", "300kB"], outputs: ["sharded": "b97ff989d3a885de"]),
        Case(arguments: ["dequant", "$OUT/int8o.qc", "$OUT/int8o.safetensors", "--dtype", "f32"], outputs: ["int8o.safetensors": "e92ede6ce490e317"]),
        Case(arguments: ["dequant", "$OUT/bf16base.qc", "$OUT/bf16base"], outputs: ["bf16base": "1e0224a0090ee237"]),
        // merge-lora into safetensors, every fixture kind.
        Case(arguments: ["merge-lora", "Samples/lora_llama_basic/base", "Samples/lora_llama_basic/adapter", "$OUT/merged"], outputs: ["merged": "feda42eee883876b"]),
        Case(arguments: ["merge-lora", "Tests/Fixtures/lora/dora_llama/base", "Tests/Fixtures/lora/dora_llama/adapter", "$OUT/dora"],
             outputs: ["dora": "b24daab68c605fff"]),
        Case(arguments: ["merge-lora", "Tests/Fixtures/lora/lora_gpt2_fan_in_fan_out_bias/base",
                         "Tests/Fixtures/lora/lora_gpt2_fan_in_fan_out_bias/adapter", "$OUT/gpt2"], outputs: ["gpt2": "724365b8f3c3f266"]),
        Case(arguments: ["merge-lora", "Tests/Fixtures/lora/lora_llama_embedding_modules_to_save/base",
                         "Tests/Fixtures/lora/lora_llama_embedding_modules_to_save/adapter", "$OUT/emb"], outputs: ["emb": "bc3780803105117d"]),
        Case(arguments: ["merge-lora", "Tests/Fixtures/lora/lora_llama_rslora_patterns/base",
                         "Tests/Fixtures/lora/lora_llama_rslora_patterns/adapter", "$OUT/rslora", "--scale", "0.5"], outputs: ["rslora": "0b93b956cbecc251"]),
        Case(arguments: ["merge-lora", "Tests/Fixtures/lora/lora_llama_bf16_base/base", "Tests/Fixtures/lora/lora_llama_bf16_base/adapter",
                         "$OUT/bf16merged"], outputs: ["bf16merged": "b6d651694c5aa458"]),
        Case(arguments: ["merge-lora", "Tests/Fixtures/lora/peft_extra/dora_bf16base/base", "Tests/Fixtures/lora/peft_extra/dora_bf16base/adapter",
                         "$OUT/dorabf16"], outputs: ["dorabf16": "59b9c245f2d60eb7"]),
        Case(arguments: ["merge-lora", "Tests/Fixtures/lora/peft_extra/gpt2_lorabias_f16/base", "Tests/Fixtures/lora/peft_extra/gpt2_lorabias_f16/adapter",
                         "$OUT/gpt2f16"], outputs: ["gpt2f16": "3f6ade8d3945ed52"]),
        // merge-lora into containers (QLoRA) and out of them.
        Case(arguments: ["to-nf4", "Samples/lora_llama_basic/base", "$OUT/base-nf4.qc"], outputs: ["base-nf4.qc": "e4ea0cbd6d69bc71"]),
        Case(arguments: ["to-int8", "Samples/lora_llama_basic/base", "$OUT/base-int8.qc", "--outlier-rms-multiple", "2"], outputs: ["base-int8.qc": "ff2a1090ea78653b"]),
        Case(arguments: ["merge-lora", "$OUT/base-nf4.qc", "Samples/lora_llama_basic/adapter", "$OUT/merged-nf4.qc"], outputs: ["merged-nf4.qc": "9b54dbf947358397"]),
        Case(arguments: ["merge-lora", "$OUT/base-int8.qc", "Samples/lora_llama_basic/adapter", "$OUT/merged-int8.qc"], outputs: ["merged-int8.qc": "4160cc3846da8f38"]),
        Case(arguments: ["merge-lora", "$OUT/base-nf4.qc", "Samples/lora_llama_basic/adapter", "$OUT/merged-deq", "--dequantize"],
             outputs: ["merged-deq": "c1733b8c55f8a153"]),
        Case(arguments: ["merge-lora", "$OUT/base-nf4.qc", "Samples/lora_llama_basic/adapter", "$OUT/merged-deq.safetensors", "--dequantize", "--dtype", "f16"],
             outputs: ["merged-deq.safetensors": "04a8303946222986"]),
    ]

    func testOutputsAreByteIdenticalToTheRecordedOnes() throws {
        let directory = TemporaryDirectory()
        let printing = ProcessInfo.processInfo.environment["QCONV_PRINT_DIGESTS"] != nil
        for entry in Self.cases {
            let arguments = entry.arguments.map { $0.replacingOccurrences(of: "$OUT/", with: directory.path + "/") } + ["--quiet"]
            let result = try runQConv(arguments, currentDirectory: Fixtures.repositoryRoot)
            XCTAssertEqual(result.status, 0, "\(entry.arguments.joined(separator: " ")): \(result.stderr)")
            for (name, expected) in entry.outputs.sorted(by: { $0.key < $1.key }) {
                let actual = try Self.digest(directory.file(name))
                if printing { print("DIGEST \(entry.arguments.joined(separator: " ")) -> \(name): \(actual)") }
                XCTAssertEqual(actual, expected, "\(entry.arguments.joined(separator: " ")): \(name) changed")
            }
        }
    }

    /// The xxHash64 of a file, or for a folder of each file's name and bytes in name order.
    static func digest(_ path: String) throws -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return "missing" }
        var hasher = XXHash64()
        if isDirectory.boolValue {
            for name in try FileManager.default.contentsOfDirectory(atPath: path).sorted() {
                Array(name.utf8).withUnsafeBytes { hasher.update($0) }
                try Data(contentsOf: URL(fileURLWithPath: path + "/" + name)).withUnsafeBytes { hasher.update($0) }
            }
        } else {
            try Data(contentsOf: URL(fileURLWithPath: path)).withUnsafeBytes { hasher.update($0) }
        }
        return ContainerFormat.hexString(hasher.digest())
    }
}
