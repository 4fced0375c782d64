import Foundation
import XCTest
import QConvKit
import QConvTestSupport

/// Adapters whose keys carry the adapter's name (`lora_A.<name>.weight`, as a
/// PEFT model's own `state_dict()` has them) merge like the saved ones.
final class MergeLoRANamedKeysCLITests: XCTestCase {
    /// The saved key with the adapter name PEFT's modules use inserted.
    static func named(_ key: String, _ name: String) -> String {
        for marker in [".lora_A.", ".lora_B."] where key.contains(marker) {
            return key.replacingOccurrences(of: marker, with: "\(marker)\(name).")
        }
        for marker in [".lora_embedding_A", ".lora_embedding_B", ".lora_magnitude_vector"] where key.hasSuffix(marker) {
            return key + "." + name
        }
        if key.hasSuffix("lm_head.weight") { return key.replacingOccurrences(of: "lm_head.weight", with: "lm_head.modules_to_save.\(name).weight") }
        return key
    }

    /// A copy of an adapter folder whose keys get adapter names (`names` picks one per key).
    private func namedCopy(of adapter: String, in folder: TemporaryDirectory, names: (String) -> String) throws -> String {
        let path = folder.file("named")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: adapter + "/adapter_config.json", toPath: path + "/adapter_config.json")
        let file = try SafeTensorsFile(path: adapter + "/adapter_model.safetensors")
        let infos = file.tensors.map { TensorInfo(name: Self.named($0.info.name, names($0.info.name)), dtype: $0.info.dtype, shape: $0.info.shape) }
        let writer = try CheckpointWriter(destination: path + "/adapter_model.safetensors", layout: .file, tensors: infos,
                                          metadata: file.header.metadata, overwrite: true, inputs: [])
        for entry in file.tensors { try file.bytes(of: entry).withUnsafeBytes { try writer.write($0) } }
        try writer.commit()
        return path
    }

    func testKeysWithAnAdapterNameMergeLikeTheSavedOnes() throws {
        for name in ["lora_llama_embedding_modules_to_save", "dora_llama", "lora_gpt2_fan_in_fan_out_bias"] {
            let folder = TemporaryDirectory("qconv-named")
            let base = Fixtures.path("lora/\(name)/base/model.safetensors"), adapter = Fixtures.path("lora/\(name)/adapter")
            let named = try namedCopy(of: adapter, in: folder) { _ in "default" }
            let header = try SafeTensorsFile(path: named + "/adapter_model.safetensors").tensors.map(\.name)
            XCTAssertTrue(header.contains { $0.contains(".default") }, "\(name): \(header)")
            for (input, output) in [(adapter, "saved.safetensors"), (named, "named.safetensors")] {
                let result = try runQConv(["merge-lora", base, input, folder.file(output), "--quiet"])
                XCTAssertEqual(result.status, 0, "\(name): \(result.stderr)")
            }
            XCTAssertEqual(FileManager.default.contents(atPath: folder.file("named.safetensors")),
                           FileManager.default.contents(atPath: folder.file("saved.safetensors")), name)
        }
    }

    func testTwoAdapterNamesInOneFileAreRefused() throws {
        let folder = TemporaryDirectory("qconv-named")
        let adapter = Fixtures.path("lora/lora_llama_basic/adapter")
        let named = try namedCopy(of: adapter, in: folder) { $0.contains("layers.1") ? "second" : "first" }
        let result = try runQConv(["merge-lora", Fixtures.path("lora/lora_llama_basic/base"), named, folder.file("out")])
        XCTAssertEqual(result.status, 3, result.stderr)
        XCTAssertTrue(result.stderr.contains("carry different adapter names; the file holds several adapters"), result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.file("out")))
    }
}
