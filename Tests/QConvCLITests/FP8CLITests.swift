import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// FP8 checkpoints through the commands: BF16 bit for bit as the references,
/// quantized from their scaled values, verified against what they became.
final class FP8CLITests: XCTestCase {
    static func fixture(_ name: String) -> String { Fixtures.path("fp8/" + name) }

    @discardableResult
    func run(_ arguments: [String], line: UInt = #line) throws -> ProcessResult {
        let result = try runQConv(arguments)
        XCTAssertEqual(result.status, 0, result.stderr, line: line)
        return result
    }

    func data(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// `to-safetensors --dtype bf16` writes the references byte for byte, from a file, a folder or a .bin;
    /// the folder's config.json loses its quantization_config.
    func testToSafetensorsEqualsTheReferences() throws {
        let directory = TemporaryDirectory()
        for folder in ["block_scaled", "per_channel"] {
            let reference = try data(Self.fixture(folder + "/reference_bf16.safetensors"))
            try run(["to-safetensors", Self.fixture(folder + "/model.safetensors"), directory.file(folder + ".safetensors"), "--dtype", "bf16"])
            XCTAssertEqual(try data(directory.file(folder + ".safetensors")), reference, folder)
            // Without --dtype the weights take the config's torch_dtype (bfloat16).
            try run(["to-safetensors", Self.fixture(folder), directory.file(folder)])
            XCTAssertEqual(try data(directory.file(folder + "/model.safetensors")), reference, folder)
            let config = try JSONSerialization.jsonObject(with: try data(directory.file(folder + "/config.json"))) as! [String: Any]
            XCTAssertNil(config["quantization_config"], folder)
            XCTAssertEqual(config["architectures"] as? [String], ["LlamaForCausalLM"])
        }
        try run(["to-safetensors", Fixtures.path("torch_bin/fp8_block"), directory.file("bin"), "--dtype", "bf16"])
        XCTAssertEqual(try data(directory.file("bin/model.safetensors")), try data(Self.fixture("block_scaled/reference_bf16.safetensors")))
        try run(["to-safetensors", Self.fixture("plain/model.safetensors"), directory.file("plain.safetensors"), "--dtype", "f32"])
        XCTAssertEqual(try data(directory.file("plain.safetensors")), try data(Self.fixture("plain/reference_f32.safetensors")))
    }

    /// to-nf4 quantizes the scaled values (the scales are not tensors of the output), verify compares the
    /// FP8 original with the container, and a tensor kept unquantized is stored as its BF16 values.
    func testQuantizingAnFP8Checkpoint() throws {
        let directory = TemporaryDirectory()
        let container = directory.file("b.qc")
        try run(["to-nf4", Self.fixture("block_scaled"), container, "--skip", "*q_proj*", "--verify", "--min-sqnr", "15"])
        let model = try Model.open(container)
        XCTAssertEqual(model.tensors.map(\.name).filter { $0.contains("scale") }, [])
        XCTAssertEqual(model.tensors.filter { $0.scheme.name == "nf4" }.count, 2)
        let reference = try Model.open(Self.fixture("block_scaled/reference_bf16.safetensors"))
        let kept = try XCTUnwrap(model.tensor(named: "model.layers.0.self_attn.q_proj.weight"))
        XCTAssertEqual(kept.scheme, .raw)
        XCTAssertEqual(try kept.parts[0].readAll(), try reference.tensor(named: kept.name)?.parts[0].readAll())
        let config = try JSONSerialization.jsonObject(with: Data(try XCTUnwrap(model.sideFiles.first).readAll())) as! [String: Any]
        XCTAssertNil(config["quantization_config"])
        let verified = try run(["verify", Self.fixture("block_scaled"), container, "--json", "--tensors"])
        let json = try JSONSerialization.jsonObject(with: Data(verified.stdout.utf8)) as! [String: Any]
        XCTAssertEqual((json["tensors"] as? [[String: Any]])?.count, 4)
        // dequant gives the BF16 model back, with its quantized tensors approximated.
        try run(["dequant", container, directory.file("back")])
        XCTAssertEqual(Set(try Model.open(directory.file("back")).tensors.map(\.info.dtype)), [.bf16])
        try run(["verify", Self.fixture("per_channel"), Self.fixture("per_channel/reference_bf16.safetensors"), "--min-sqnr", "50"])
    }

    /// In the bitsandbytes layout the FP8 quantization_config gives way to the bitsandbytes one, and
    /// the compute dtype is the model's (BF16).
    func testAnFP8CheckpointInTheBitsandbytesLayout() throws {
        let directory = TemporaryDirectory()
        try run(["to-nf4", Self.fixture("block_scaled"), directory.file("hf"), "--format", "hf", "--quiet"])
        let config = try JSONSerialization.jsonObject(with: try data(directory.file("hf/config.json"))) as! [String: Any]
        let quantization = try XCTUnwrap(config["quantization_config"] as? [String: Any])
        XCTAssertEqual(quantization["quant_method"] as? String, "bitsandbytes")
        XCTAssertEqual(quantization["bnb_4bit_compute_dtype"] as? String, "bfloat16")
        XCTAssertNil(quantization["weight_block_size"])
        XCTAssertTrue(try run(["verify", directory.file("hf")]).stdout.contains("ok: 4 tensors, 1 shard; quantized weights: nf4"))
        try run(["verify", Self.fixture("block_scaled"), directory.file("hf"), "--min-sqnr", "15"])
        // to-safetensors takes the bitsandbytes checkpoint too: BF16 again, without a quantization_config.
        try run(["to-safetensors", directory.file("hf"), directory.file("st"), "--quiet"])
        XCTAssertNil((try JSONSerialization.jsonObject(with: try data(directory.file("st/config.json"))) as! [String: Any])["quantization_config"])
        XCTAssertEqual(Set(try Model.open(directory.file("st")).tensors.map(\.info.dtype)), [.bf16])
        try run(["verify", Self.fixture("block_scaled"), directory.file("st"), "--min-sqnr", "15"])
    }

    func testInspectShowsScalesAsPartOfTheirWeight() throws {
        let result = try run(["inspect", Self.fixture("per_channel"), "--json", "--tensors"])
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let tensors = json["tensors"] as! [[String: Any]]
        XCTAssertEqual(tensors.count, 2)
        let fp8 = try XCTUnwrap(tensors[0]["fp8"] as? [String: Any])
        XCTAssertEqual(fp8["granularity"] as? String, "channel")
        XCTAssertEqual(fp8["values_dtype"] as? String, "F8_E4M3")
        XCTAssertEqual(fp8["scale"] as? String, (tensors[0]["name"] as! String) + "_scale")
        XCTAssertEqual(tensors[0]["scheme"] as? String, "fp8")
    }
}
