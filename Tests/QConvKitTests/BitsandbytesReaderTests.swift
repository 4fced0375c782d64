import QConvTestSupport
import XCTest
@testable import QConvKit

/// transformers' bitsandbytes checkpoints (Tests/Fixtures/hf_bnb, copies of
/// shared/refdata/interop/hf_bnb) read as models whose tensors are the weights.
final class BitsandbytesReaderTests: XCTestCase {
    static let quantizedNames = [
        "mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj",
    ].flatMap { module in (0..<2).map { "model.layers.\($0).\(module).weight" } }

    func testRecognizesEveryLayoutByItsContents() throws {
        let cases: [(String, ModelFormat)] = [
            ("hf_bnb/nf4_dq_f16", .bitsandbytes(.folder)),
            ("hf_bnb/int8_bf16", .bitsandbytes(.folder)),
            ("hf_bnb/nf4_dq_f16/model.safetensors", .bitsandbytes(.file)),
            ("hf_bnb/int8_f16/model.safetensors", .bitsandbytes(.file)),
            ("hf_bnb/fp4_bf16/model.safetensors", .bitsandbytes(.file)),
            ("hf_bnb/nf4_dq_f16_sharded", .bitsandbytes(.shardedFolder)),
            ("models/hf_bnb_int8", .bitsandbytes(.folder)),
            ("hf_bnb/base_f16", .safetensorsFolder),
            ("hf_bnb/base_f16/model.safetensors", .safetensorsFile),
        ]
        for (path, format) in cases {
            XCTAssertEqual(try Model.format(of: Fixtures.path(path)), format, path)
            XCTAssertEqual(try Model.open(Fixtures.path(path)).format, format, path)
        }
        XCTAssertEqual(ModelFormat.bitsandbytes(.shardedFolder).name, "bitsandbytes-sharded-folder")
        XCTAssertTrue(ModelFormat.bitsandbytes(.file).storesQuantizedTensors)
    }

    /// A 4-bit weight is one tensor: the source's name, dtype and shape, its
    /// scheme from the quant state, its parts viewing the stored pieces.
    func testFourBitWeightsAreLogicalTensors() throws {
        for (name, format, dtype, nested) in [("nf4_dq_f16", FourBitFormat.nf4, DType.f16, true), ("nf4_dq_bf16", .nf4, .bf16, true),
                                               ("fp4_f16", .fp4, .f16, false), ("fp4_bf16", .fp4, .bf16, false)] {
            let path = Fixtures.path("hf_bnb/" + name)
            let model = try Model.open(path)
            let checkpoint = try Checkpoint(path: path)
            XCTAssertEqual(model.tensors.count, 21, name)
            XCTAssertEqual(model.tensors.map(\.name), model.tensors.map(\.name).sorted(), "\(name): by name")
            XCTAssertEqual(model.tensors.filter { $0.scheme.isQuantized }.map(\.name).sorted(), Self.quantizedNames.sorted(), name)
            for tensor in model.tensors where tensor.scheme.isQuantized {
                guard case .fourBit(let p) = tensor.scheme else { return XCTFail("\(tensor.name): \(tensor.scheme)") }
                XCTAssertEqual(p.format, format)
                XCTAssertEqual(p.blockSize, 64)
                XCTAssertEqual(tensor.info.dtype, dtype)
                XCTAssertEqual(tensor.info.shape.count, 2)
                let pieces = [tensor.name, tensor.name + ".absmax"] + (nested ? [tensor.name + ".nested_absmax"] : [])
                XCTAssertEqual(tensor.parts.count, pieces.count)
                for (part, piece) in zip(tensor.parts, pieces) {
                    let stored = try XCTUnwrap(checkpoint.tensor(named: piece)).stored
                    XCTAssertEqual(try part.readAll(), try stored.allBytes(), piece)
                }
                if nested {
                    guard case .doubleQuantized(let offset) = p.blockScales else { return XCTFail(tensor.name) }
                    XCTAssertGreaterThan(offset, 0)
                } else {
                    XCTAssertEqual(p.blockScales, .float32)
                }
            }
            XCTAssertNil(model.tensor(named: "model.layers.0.self_attn.q_proj.weight.quant_map"), "pieces are not tensors")
            XCTAssertEqual(model.sideFiles.map(\.name), ["config.json"])
        }
    }

    /// int8 weights decode to the model's dtype (config.json), without one to that of its 16-bit tensors.
    func testInt8WeightsTakeTheModelDType() throws {
        let bf16 = try Model.open(Fixtures.path("hf_bnb/int8_bf16"))
        let weight = try XCTUnwrap(bf16.tensor(named: "model.layers.0.mlp.down_proj.weight"))
        XCTAssertEqual(weight.info.dtype, .bf16)
        XCTAssertEqual(weight.info.shape, [64, 176])
        XCTAssertEqual(weight.scheme, .int8(Int8Parameters(outlierRule: .none, outlierColumnCount: 0, outlierThreshold: nil)))
        XCTAssertEqual(weight.parts.map(\.bytes.length), [11264, 256, 0, 0])
        XCTAssertEqual(try Model.open(Fixtures.path("hf_bnb/int8_bf16/model.safetensors")).tensor(named: weight.name)?.info.dtype, .bf16)
        XCTAssertEqual(try Model.open(Fixtures.path("hf_bnb/int8_f16/model.safetensors")).tensor(named: weight.name)?.info.dtype, .f16)
        XCTAssertEqual(try Model.open(Fixtures.path("models/hf_bnb_int8")).tensor(named: weight.name)?.info.dtype, .f32)
    }

    /// The sharded save holds the same weights as the single file, each from its own shard.
    func testShardedCheckpointReadsLikeTheSingleFile() throws {
        let sharded = try Model.open(Fixtures.path("hf_bnb/nf4_dq_f16_sharded"))
        let single = try Model.open(Fixtures.path("hf_bnb/nf4_dq_f16"))
        XCTAssertEqual(sharded.files.count, 3)
        XCTAssertNotNil(sharded.index)
        XCTAssertEqual(sharded.tensors.map(\.info), single.tensors.map(\.info))
        XCTAssertEqual(sharded.tensors.map(\.scheme), single.tensors.map(\.scheme))
        for (a, b) in zip(sharded.tensors, single.tensors) {
            XCTAssertEqual(try a.parts.map { try $0.readAll() }, try b.parts.map { try $0.readAll() }, a.name)
        }
        XCTAssertEqual(sharded.tensor(named: "lm_head.weight")?.file, 0)
        XCTAssertEqual(sharded.tensor(named: "model.layers.1.mlp.up_proj.weight")?.file, 2)
    }
}
