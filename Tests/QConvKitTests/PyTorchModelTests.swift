import Foundation
import XCTest
import QConvKit
import QConvTestSupport

/// PyTorch checkpoints through the format seam: files, folders, sharded
/// folders, views, adapters, against what torch and safetensors wrote.
final class PyTorchModelTests: XCTestCase {
    static func fixture(_ name: String) -> String { Fixtures.path("torch_bin/" + name) }

    /// The values of every tensor (a strided one included) are the reference's, read through `values()`.
    func testValuesAreTheReferenceValues() throws {
        for (path, reference) in [("shared_storage/pytorch_model.bin", "shared_storage/reference.safetensors"),
                                  ("sharded", "single/reference.safetensors"), ("single/pytorch_model.bin", "single/reference.safetensors"),
                                  ("new_dtypes/pytorch_model.bin", "new_dtypes/reference.safetensors")] {
            let model = try Model.open(Self.fixture(path))
            let expected = try Model.open(Self.fixture(reference))
            XCTAssertEqual(Set(model.tensors.map(\.name)), Set(expected.tensors.map(\.name)), path)
            for tensor in model.tensors where tensor.info.dtype.isDecodableToFloat {
                let other = try XCTUnwrap(expected.tensor(named: tensor.name))
                XCTAssertEqual(tensor.info, other.info, path)
                XCTAssertEqual(try floatBits(tensor), try floatBits(other), "\(path) \(tensor.name)")
            }
        }
        let model = try Model.open(Self.fixture("shared_storage/pytorch_model.bin"))
        XCTAssertEqual(model.format, .pytorchFile)
        XCTAssertEqual(model.tensor(named: "a.transposed")?.scheme.name, "strided")
        XCTAssertEqual(try Model.open(Self.fixture("sharded")).format, .pytorchShardedFolder)
        XCTAssertEqual(try Model.open(Self.fixture("sharded")).sideFiles.map(\.name), ["config.json"])
        XCTAssertEqual(try Model.open(Self.fixture("single")).format, .safetensorsFolder, "its reference.safetensors is preferred")
    }

    /// A large transpose: tiles whose stored bytes are too far apart for one
    /// read are gathered run by run, and both ways give the same values.
    func testLargeStridedViewsAreGatheredInAnyRange() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("t.bin")
        let (rows, columns) = (300, 200)
        let pickle = Pickle.stateDict([("t", { $0.tensor(key: "0", count: rows * columns, shape: [columns, rows], strides: [1, columns]) })])
        try writeTorchCheckpoint(path, pickle: pickle, storages: ["0": floatBytes(rows * columns)])
        let tensor = try XCTUnwrap(try Model.open(path).tensor(named: "t"))
        let values = try tensor.values()
        for range in [0..<(rows * columns), 0..<7, 5000..<21000, 299..<301] {
            let out = try readFloats(values, range)
            // Element (i, j) of the transpose is stored element j * columns + i, whose value is its index.
            XCTAssertEqual(out, range.map { Float(($0 % rows) * columns + $0 / rows) }, "\(range)")
        }
    }

    /// A folder with safetensors weights beside pytorch_model.bin is read as safetensors, as transformers does.
    func testSafetensorsArePreferredInAFolderWithBoth() throws {
        let directory = TemporaryDirectory()
        try FileManager.default.copyItem(atPath: Self.fixture("single/pytorch_model.bin"), toPath: directory.file("pytorch_model.bin"))
        XCTAssertEqual(try Model.open(directory.path).format, .pytorchFolder)
        try FileManager.default.copyItem(atPath: Self.fixture("single/reference.safetensors"), toPath: directory.file("model.safetensors"))
        XCTAssertEqual(try Model.open(directory.path).format, .safetensorsFolder)
    }

    /// The shard index is checked against the shards as a safetensors index is.
    func testShardIndexRules() throws {
        let directory = TemporaryDirectory()
        for name in try FileManager.default.contentsOfDirectory(atPath: Self.fixture("sharded")) {
            try FileManager.default.copyItem(atPath: Self.fixture("sharded/" + name), toPath: directory.file(name))
        }
        let indexPath = directory.file("pytorch_model.bin.index.json")
        let original = try String(contentsOfFile: indexPath, encoding: .utf8)
        try original.replacingOccurrences(of: "\"model.norm.weight\": \"pytorch_model-00002-of-00003.bin\",", with: "")
            .write(toFile: indexPath, atomically: false, encoding: .utf8)
        XCTAssertThrowsError(try Model.open(directory.path)) { error in
            XCTAssertEqual(error as? CheckpointError, .tensorNotListed(index: indexPath, tensor: "model.norm.weight", shard: "pytorch_model-00002-of-00003.bin"))
        }
        try original.replacingOccurrences(of: "\"model.norm.weight\": \"pytorch_model-00002-of-00003.bin\"",
                                          with: "\"model.norm.weight\": \"pytorch_model-00001-of-00003.bin\"").write(toFile: indexPath, atomically: false, encoding: .utf8)
        XCTAssertThrowsError(try Model.open(directory.path)) { error in
            XCTAssertEqual(error as? CheckpointError, .tensorInWrongShard(index: indexPath, tensor: "model.norm.weight", listed: "pytorch_model-00001-of-00003.bin",
                                                                          found: "pytorch_model-00002-of-00003.bin"))
        }
    }

    /// PEFT's adapter_model.bin gives the modules its safetensors twin gives, with the same bytes.
    func testAdapterBinIsItsSafetensorsTwin() throws {
        let pickled = try LoRAAdapter(path: Self.fixture("adapter_bin"))
        let safe = try LoRAAdapter(path: Self.fixture("adapter_safetensors"))
        XCTAssertEqual(pickled.weightsPath, Self.fixture("adapter_bin/adapter_model.bin"))
        XCTAssertEqual(pickled.modules.map(\.name), safe.modules.map(\.name))
        for (a, b) in zip(pickled.modules, safe.modules) {
            XCTAssertEqual(a.down.info, b.down.info)
            XCTAssertEqual(try a.down.allBytes(), try b.down.allBytes())
            XCTAssertEqual(try a.up.allBytes(), try b.up.allBytes())
            XCTAssertEqual(a.scale, b.scale)
        }
        // The weights file given directly.
        XCTAssertEqual(try LoRAAdapter(path: Self.fixture("adapter_bin/adapter_model.bin")).modules.count, safe.modules.count)
    }

}
