import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// PyTorch checkpoints through every command: to-safetensors byte for byte
/// as safetensors writes them, quantizing, verifying and merging from a .bin,
/// and hostile files refused by every command with nothing run.
final class PyTorchCLITests: XCTestCase {
    static func fixture(_ name: String) -> String { Fixtures.path("torch_bin/" + name) }

    @discardableResult
    func run(_ arguments: [String], line: UInt = #line) throws -> ProcessResult {
        let result = try runQConv(arguments)
        XCTAssertEqual(result.status, 0, result.stderr, line: line)
        return result
    }

    /// Each .bin (a plain dict, views of one storage, a module's state dict, newer dtypes, shards) comes
    /// out as the file `safetensors.torch.save_file` wrote for its state dict.
    func testToSafetensorsIsByteIdenticalToSaveFile() throws {
        let directory = TemporaryDirectory()
        for (input, reference) in [("single/pytorch_model.bin", "single"), ("shared_storage/pytorch_model.bin", "shared_storage"),
                                   ("module_state/pytorch_model.bin", "module_state"), ("new_dtypes/pytorch_model.bin", "new_dtypes"),
                                   ("sharded", "single")] {
            let output = directory.file(reference + "-\(input.count).safetensors")
            try run(["to-safetensors", Self.fixture(input), output, "--quiet"])
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: output)),
                           try Data(contentsOf: URL(fileURLWithPath: Self.fixture(reference + "/reference.safetensors"))), input)
        }
    }

    /// A folder output: shards, an index, the config copied; --dtype converts float tensors.
    func testToSafetensorsFolderWithShardsAndDType() throws {
        let directory = TemporaryDirectory()
        let output = directory.file("out")
        let result = try run(["to-safetensors", Self.fixture("sharded"), output, "--max-shard-size", "100KB", "--dtype", "bf16", "--json"])
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(json["command"] as? String, "to-safetensors")
        XCTAssertEqual(FileManager.default.fileExists(atPath: output + "/config.json"), true)
        XCTAssertTrue(FileManager.default.fileExists(atPath: output + "/model.safetensors.index.json"))
        let model = try Model.open(output)
        XCTAssertGreaterThan(model.files.count, 1)
        XCTAssertEqual(Set(model.tensors.map(\.info.dtype)), [.bf16])
        XCTAssertEqual(try runQConv(["verify", Self.fixture("sharded"), output, "--min-sqnr", "40"]).status, 0)
    }

    /// to-nf4 from a .bin stores what to-nf4 from its safetensors twin stores; verify and dequant take the .bin.
    func testQuantizingAndVerifyingFromABin() throws {
        let directory = TemporaryDirectory()
        let fromBin = directory.file("bin.qc"), fromSafetensors = directory.file("st.qc")
        try run(["to-nf4", Self.fixture("sharded"), fromBin, "--quiet"])
        try run(["to-nf4", Self.fixture("single/reference.safetensors"), fromSafetensors, "--quiet"])
        let a = try Model.open(fromBin), b = try Model.open(fromSafetensors)
        XCTAssertEqual(a.sideFiles.map(\.name), ["config.json"])
        for tensor in a.tensors {
            let other = try XCTUnwrap(b.tensor(named: tensor.name))
            XCTAssertEqual(tensor.scheme, other.scheme, tensor.name)
            XCTAssertEqual(try tensor.parts.map { try $0.readAll() }, try other.parts.map { try $0.readAll() }, tensor.name)
        }
        let verified = try run(["verify", Self.fixture("sharded"), fromBin, "--json"])
        let json = try JSONSerialization.jsonObject(with: Data(verified.stdout.utf8)) as! [String: Any]
        XCTAssertEqual((json["overall"] as? [String: Any])?["element_count"] as? Int, 92160)
        try run(["verify", Self.fixture("shared_storage/pytorch_model.bin"), Self.fixture("shared_storage/reference.safetensors"), "--max-abs-err", "0"])
        try run(["verify", Self.fixture("shared_storage/reference.safetensors"), Self.fixture("shared_storage/pytorch_model.bin"), "--max-abs-err", "0"])
    }

    /// merge-lora: a .bin adapter merges as its safetensors twin; a .bin base folder gives a safetensors folder.
    func testMergeWithBinBaseAndAdapter() throws {
        let directory = TemporaryDirectory()
        try run(["merge-lora", Self.fixture("single/pytorch_model.bin"), Self.fixture("adapter_bin"), directory.file("a.safetensors"), "--quiet"])
        try run(["merge-lora", Self.fixture("single/reference.safetensors"), Self.fixture("adapter_safetensors"), directory.file("b.safetensors"), "--quiet"])
        let a = try Model.open(directory.file("a.safetensors")), b = try Model.open(directory.file("b.safetensors"))
        for tensor in b.tensors {
            XCTAssertEqual(try a.tensor(named: tensor.name)?.parts[0].readAll(), try tensor.parts[0].readAll(), tensor.name)
        }
        try run(["merge-lora", Self.fixture("sharded"), Self.fixture("adapter_bin/adapter_model.bin"), directory.file("folder"), "--quiet"])
        XCTAssertEqual(TemporaryDirectory.names(directory.file("folder")),
                       ["config.json", "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
                        "model.safetensors.index.json"])
    }

    /// Every hostile file, given to every command that reads a model, is refused (exit 3, naming it), and nothing runs.
    func testEveryCommandRefusesHostileFiles() throws {
        let directory = TemporaryDirectory()
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.fixture("hostile.json")))) as! [String: Any]
        let marker = manifest["marker"] as! String
        let existedBefore = FileManager.default.fileExists(atPath: marker)
        let good = Self.fixture("single/reference.safetensors")
        for name in manifest["files"] as! [String] {
            let path = Self.fixture("hostile/" + name)
            for arguments in [["inspect", path], ["to-nf4", path, directory.file("o.qc")], ["to-int8", path, directory.file("o.qc")],
                              ["to-safetensors", path, directory.file("o.safetensors")], ["verify", path, good], ["verify", good, path],
                              ["merge-lora", path, Self.fixture("adapter_bin"), directory.file("m.safetensors")]] {
                let result = try runQConv(arguments)
                XCTAssertEqual(result.status, 3, "\(arguments): \(result.stderr)")
                XCTAssertTrue(result.stderr.hasPrefix("qconv: error: \(path): "), "\(arguments): \(result.stderr)")
            }
        }
        XCTAssertEqual(directory.contents(), [])
        if !existedBefore { XCTAssertFalse(FileManager.default.fileExists(atPath: marker)) }
    }

    /// Given a file it cannot use, each command says what the file is (exit 3).
    func testEveryCommandNamesWhatItWasGiven() throws {
        let directory = TemporaryDirectory()
        let gguf = directory.file("model.gguf"), zip = directory.file("notes.bin"), container = directory.file("m.qc")
        writeFile(gguf, Array("GGUF".utf8) + [3] + [UInt8](repeating: 0, count: 27))
        try writeZip(zip, [("notes/readme.txt", Array("hello".utf8))])
        try run(["to-nf4", Self.fixture("shared_storage/pytorch_model.bin"), container, "--quiet"])
        let bin = Self.fixture("shared_storage/pytorch_model.bin"), legacy = Self.fixture("hostile/legacy_format.bin")
        let cases: [([String], String)] = [
            (["inspect", gguf], "\(gguf): this is a GGUF file (llama.cpp), which qconv does not read"),
            (["to-nf4", gguf, directory.file("o.qc")], "\(gguf): this is a GGUF file (llama.cpp), which qconv does not read"),
            (["inspect", zip], "\(zip): this is a zip archive that is not a PyTorch checkpoint (it has no data.pkl)"),
            (["to-safetensors", legacy, directory.file("o.safetensors")], "\(legacy): this is a Python pickle (a legacy PyTorch checkpoint, saved by torch before 1.6"),
            (["to-fp4", container, directory.file("o.qc")], "\(container): tensor 'a.weight' is stored as nf4, block size 64, double quant, not fp4"),
            (["dequant", bin, directory.file("o")], "\(bin): this is a pytorch model; dequant turns a quantized model"),
            (["dequant", zip, directory.file("o")], "\(zip): this is a zip archive that is not a PyTorch checkpoint"),
        ]
        for (arguments, message) in cases {
            let result = try runQConv(arguments)
            XCTAssertEqual(result.status, 3, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix("qconv: error: " + message), "\(arguments): \(result.stderr)")
        }
        // One-argument verify checks any model: a .bin's archive, pickle and views.
        XCTAssertTrue(try run(["verify", bin]).stdout.hasPrefix("\(bin): ok: 7 tensors in 1 file"))
        XCTAssertEqual(try runQConv(["verify", Self.fixture("hostile/os_system.bin")]).status, 3)
    }

    func testInspectNamesTheFormat() throws {
        let result = try run(["inspect", Self.fixture("sharded"), "--json"])
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(json["format"] as? String, "pytorch-sharded-folder")
        XCTAssertEqual(json["tensor_count"] as? Int, 21)
        XCTAssertEqual(json["auxiliary_files"] as? [String], ["config.json"])
    }
}

extension TemporaryDirectory {
    /// The names in a folder, sorted.
    static func names(_ path: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
}
