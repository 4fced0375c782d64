import XCTest
import QConvKit
import QConvTestSupport

/// Model folders: every rule of `CheckpointError`, and what opening a folder reports.
final class CheckpointTests: XCTestCase {
    private static let index = "model.safetensors.index.json"
    private static let shard1 = "model-00001-of-00002.safetensors"
    private static let shard2 = "model-00002-of-00002.safetensors"

    /// The exact error each crafted folder must raise, given the folder's path.
    enum Expected { case checkpoint(CheckpointError), safetensors(SafeTensorsError) }

    static let expectations: [String: (String) -> Expected] = {
        let index = CheckpointTests.index, shard1 = CheckpointTests.shard1, shard2 = CheckpointTests.shard2
        func i(_ folder: String) -> String { folder + "/" + index }
        return [
            "index_not_json": { f in .checkpoint(.invalidIndex(file: i(f), reason: "not valid JSON: expected a string key at byte 16")) },
            "index_is_array": { f in .checkpoint(.invalidIndex(file: i(f), reason: "must be a JSON object, found an array")) },
            "index_without_weight_map": { f in .checkpoint(.invalidIndex(file: i(f), reason: "missing \"weight_map\"")) },
            "weight_map_not_object": { f in .checkpoint(.invalidIndex(file: i(f), reason: "\"weight_map\" must be an object, found an array")) },
            "weight_map_value_not_string": { f in
                .checkpoint(.invalidIndex(file: i(f), reason: "weight_map entry 'a' must be a string, found a number"))
            },
            "shard_name_with_slash": { f in .checkpoint(.unsafeShardName(index: i(f), tensor: "a", shard: "../" + shard1)) },
            "shard_name_in_subfolder": { f in .checkpoint(.unsafeShardName(index: i(f), tensor: "a", shard: "sub/" + shard1)) },
            "shard_name_dot_dot": { f in .checkpoint(.unsafeShardName(index: i(f), tensor: "a", shard: "..")) },
            "shard_name_empty": { f in .checkpoint(.unsafeShardName(index: i(f), tensor: "a", shard: "")) },
            "listed_shard_missing": { f in .checkpoint(.shardMissing(index: i(f), shard: "model-00003-of-00003.safetensors")) },
            "tensor_listed_but_absent": { f in .checkpoint(.tensorListedButAbsent(index: i(f), tensor: "c", shard: shard2)) },
            "tensor_present_but_unlisted": { f in .checkpoint(.tensorNotListed(index: i(f), tensor: "b", shard: shard2)) },
            "tensor_in_two_shard_headers": { f in .checkpoint(.tensorInTwoShards(index: i(f), tensor: "a", shards: [shard1, shard2])) },
            "tensor_twice_in_weight_map": { f in .checkpoint(.tensorInTwoShards(index: i(f), tensor: "a", shards: [shard1, shard2])) },
            "tensor_in_wrong_shard": { f in .checkpoint(.tensorInWrongShard(index: i(f), tensor: "b", listed: shard1, found: shard2)) },
            "invalid_shard": { f in .safetensors(.tensorSizeMismatch(file: f + "/" + shard2, tensor: "b", expected: 8, actual: 4)) },
            "folder_without_weights": { f in .checkpoint(.noWeights(folder: f)) },
            "empty_folder": { f in .checkpoint(.noWeights(folder: f)) },
            "two_files_without_index": { f in .checkpoint(.ambiguousWeights(folder: f, files: ["a.safetensors", "b.safetensors"])) },
            "invalid_single_model_file": { f in
                .safetensors(.offsetsNotContiguous(file: f + "/model.safetensors", tensor: "w", begin: 4, expected: 0))
            },
        ]
    }()

    private func assertError(_ error: Error, equals expected: Expected, _ name: String) {
        switch expected {
        case .checkpoint(let expected): XCTAssertEqual(error as? CheckpointError, expected, "\(name): \(error)")
        case .safetensors(let expected): XCTAssertEqual(error as? SafeTensorsError, expected, "\(name): \(error)")
        }
    }

    func testEveryCraftedFolderHasAnExpectation() {
        XCTAssertEqual(Set(CraftedInputs.invalidModelFolders.map(\.name)), Set(Self.expectations.keys))
    }

    func testEveryFolderRuleRaisesItsExactError() throws {
        let root = TemporaryDirectory()
        for input in CraftedInputs.invalidModelFolders {
            let folder = input.create(in: root.path)
            guard let expected = Self.expectations[input.name]?(folder) else { continue }
            XCTAssertThrowsError(try Checkpoint(path: folder), input.name) { error in
                self.assertError(error, equals: expected, input.name)
                guard let error = error as? QConvError else { return XCTFail("\(input.name): \(error)") }
                XCTAssertEqual(error.category.exitCode, 3, input.name)
                XCTAssertTrue(error.description.hasPrefix(folder), "\(input.name): \(error.description)")
                XCTAssertFalse(error.description.contains("\n"), input.name)
                if let tensor = input.tensor { XCTAssertTrue(error.description.contains("'\(tensor)'"), "\(input.name): \(error.description)") }
            }
        }
    }

    func testMissingInputIsAnIOError() {
        XCTAssertThrowsError(try Checkpoint(path: "/nonexistent/qconv/model.safetensors")) { error in
            XCTAssertEqual((error as? QConvError)?.category, .io)
            XCTAssertTrue("\(error)".contains("/nonexistent/qconv/model.safetensors"))
        }
    }

    func testSingleModelFileFolder() throws {
        let folder = TemporaryDirectory()
        writeFile(folder.file("model.safetensors"), CraftedInputs.validF32("w", [1, 2, 3]))
        writeFile(folder.file("config.json"), Array("{}".utf8))
        writeFile(folder.file("tokenizer.json"), Array("{}".utf8))
        writeFile(folder.file("tokenizer_config.json"), Array("{}".utf8))
        writeFile(folder.file("special_tokens_map.json"), Array("{}".utf8))
        writeFile(folder.file("tokenizer.model"), [1, 2, 3])
        writeFile(folder.file(".hidden"), [1])
        try FileManager.default.createDirectory(atPath: folder.file("subfolder"), withIntermediateDirectories: false)
        let checkpoint = try Checkpoint(path: folder.path)
        XCTAssertEqual(checkpoint.layout, .folder)
        XCTAssertEqual(checkpoint.tensors.map(\.name), ["w"])
        XCTAssertEqual(try checkpoint.tensor(named: "w")?.stored.allFloats(), [1, 2, 3])
        XCTAssertEqual(checkpoint.auxiliaryFiles,
                       ["config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"])
        XCTAssertEqual(checkpoint.metadata?.first?.value, "pt")
        XCTAssertNil(checkpoint.index)
        XCTAssertEqual(Set(checkpoint.filePaths), Set([folder.file("model.safetensors"), folder.path] + checkpoint.auxiliaryFiles.map(folder.file)))
    }

    func testFolderWithOneDifferentlyNamedFile() throws {
        let folder = TemporaryDirectory()
        writeFile(folder.file("weights.safetensors"), CraftedInputs.validF32("w", [1]))
        let checkpoint = try Checkpoint(path: folder.path)
        XCTAssertEqual(checkpoint.layout, .folder)
        XCTAssertEqual(checkpoint.shardName(of: checkpoint.tensors[0]), "weights.safetensors")
    }

    func testModelSafetensorsWinsOverOtherFiles() throws {
        let folder = TemporaryDirectory()
        writeFile(folder.file("model.safetensors"), CraftedInputs.validF32("w", [1]))
        writeFile(folder.file("other.safetensors"), CraftedInputs.validF32("v", [1]))
        let checkpoint = try Checkpoint(path: folder.path)
        XCTAssertEqual(checkpoint.tensors.map(\.name), ["w"])
    }

    func testShardedSample() throws {
        let path = Fixtures.sample("sharded_llama")
        let checkpoint = try Checkpoint(path: path)
        XCTAssertEqual(checkpoint.layout, .shardedFolder)
        XCTAssertEqual(checkpoint.shards.count, 11)
        XCTAssertEqual(checkpoint.tensors.count, 21)
        XCTAssertEqual(checkpoint.tensors.reduce(0) { $0 + $1.info.elementCount }, 391_808)
        XCTAssertEqual(checkpoint.auxiliaryFiles, ["config.json"])
        XCTAssertEqual(checkpoint.metadata?.map(\.key), ["format"])
        // Shard by shard in file-name order, data order within a shard.
        XCTAssertEqual(checkpoint.tensors.map(\.shard), checkpoint.tensors.map(\.shard).sorted())
        XCTAssertEqual(checkpoint.tensors.first?.name, "model.embed_tokens.weight")
        XCTAssertEqual(checkpoint.tensors.last?.name, "lm_head.weight")
        let q = try XCTUnwrap(checkpoint.tensor(named: "model.layers.1.self_attn.q_proj.weight"))
        XCTAssertEqual(checkpoint.shardName(of: q), "model-00006-of-00011.safetensors")
        XCTAssertEqual(q.info.shape, [128, 128])
        XCTAssertTrue(checkpoint.filePaths.contains(path + "/model.safetensors.index.json"))
        XCTAssertTrue(checkpoint.filePaths.contains(path + "/config.json"))
        XCTAssertEqual(checkpoint.filePaths.filter { $0.hasSuffix(".safetensors") }.count, 11)
    }

    func testShardedFolderReportsAuxiliaryFilesButNotUnlistedWeights() throws {
        let folder = TemporaryDirectory()
        writeFile(folder.file(Self.shard1), CraftedInputs.validF32("a", [1]))
        writeFile(folder.file(Self.shard2), CraftedInputs.validF32("b", [2]))
        writeFile(folder.file("stray.safetensors"), CraftedInputs.validF32("c", [3]))
        writeFile(folder.file(Self.index), Array("{\"metadata\":{},\"weight_map\":{\"b\":\"\(Self.shard2)\",\"a\":\"\(Self.shard1)\"}}".utf8))
        writeFile(folder.file("config.json"), Array("{}".utf8))
        writeFile(folder.file("generation_config.json"), Array("{}".utf8))
        let checkpoint = try Checkpoint(path: folder.path)
        XCTAssertEqual(checkpoint.tensors.map(\.name), ["a", "b"])
        XCTAssertEqual(checkpoint.auxiliaryFiles, ["config.json", "generation_config.json"])
        XCTAssertNil(checkpoint.tensor(named: "c"))
        XCTAssertEqual(try checkpoint.tensor(named: "b")?.stored.allFloats(), [2])
    }

    /// Weights in other formats, their indexes, hidden files and subfolders are
    /// not auxiliary files: converters would carry them into the output.
    func testWeightFilesInOtherFormatsAreNotAuxiliaryFiles() throws {
        let weights = ["pytorch_model.bin", "pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth",
                       "last.ckpt", "tf_model.h5", "tf_model.h5.index.json", "flax_model.msgpack", "model.onnx", "model.gguf",
                       "rust_model.ot", "weights.npz", "model.tflite", "other.safetensors", "model.safetensors.index.json",
                       "PYTORCH_MODEL.BIN", ".hidden", ".config.json"]
        for name in weights { XCTAssertFalse(Checkpoint.isAuxiliaryFileName(name), name) }
        for name in ["config.json", "tokenizer.json", "tokenizer.model", "vocab.txt", "merges.txt", "README.md", "LICENSE",
                     "bin", "spiece.model", "binary.json", "added_tokens.json", "training_args.binx"] {
            XCTAssertTrue(Checkpoint.isAuxiliaryFileName(name), name)
        }

        let single = TemporaryDirectory()
        writeFile(single.file("model.safetensors"), CraftedInputs.validF32("w", [1]))
        writeFile(single.file("config.json"), Array("{}".utf8))
        // (An index would make the folder sharded; the sharded folder below has one.)
        let weightFiles = weights.filter { $0 != Self.index }
        for name in weightFiles { writeFile(single.file(name), [1, 2, 3]) }
        try FileManager.default.createDirectory(atPath: single.file("checkpoint-500"), withIntermediateDirectories: false)
        XCTAssertEqual(try Checkpoint(path: single.path).auxiliaryFiles, ["config.json"])

        let sharded = TemporaryDirectory()
        writeFile(sharded.file(Self.shard1), CraftedInputs.validF32("a", [1]))
        writeFile(sharded.file(Self.shard2), CraftedInputs.validF32("b", [2]))
        writeFile(sharded.file(Self.index), Array("{\"metadata\":{},\"weight_map\":{\"b\":\"\(Self.shard2)\",\"a\":\"\(Self.shard1)\"}}".utf8))
        writeFile(sharded.file("generation_config.json"), Array("{}".utf8))
        for name in weightFiles { writeFile(sharded.file(name), [1, 2, 3]) }
        XCTAssertEqual(try Checkpoint(path: sharded.path).auxiliaryFiles, ["generation_config.json"])
    }

    func testSingleFileLayout() throws {
        let path = Fixtures.sample("lora_llama_basic/base/model.safetensors")
        let checkpoint = try Checkpoint(path: path)
        XCTAssertEqual(checkpoint.layout, .file)
        XCTAssertEqual(checkpoint.auxiliaryFiles, [])
        XCTAssertEqual(checkpoint.filePaths, [path])
        XCTAssertEqual(checkpoint.shards.count, 1)
    }
}
