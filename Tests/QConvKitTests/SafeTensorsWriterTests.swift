import XCTest
import QConvKit
import QConvTestSupport

final class SafeTensorsWriterTests: XCTestCase {
    private func data(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// Deterministic bytes for a tensor.
    private func bytes(for info: TensorInfo, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        return (0..<info.byteCount).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    private let mixedTensors: [TensorInfo] = [
        TensorInfo(name: "embed.weight", dtype: .f32, shape: [4, 3]),
        TensorInfo(name: "empty", dtype: .f16, shape: [0, 7]),
        TensorInfo(name: "scalar", dtype: .i64, shape: []),
        TensorInfo(name: "bias", dtype: .bf16, shape: [5]),
        TensorInfo(name: "packed", dtype: .f4, shape: [6]),
        TensorInfo(name: "six", dtype: .f6e3m2, shape: [4]),
        TensorInfo(name: "flag", dtype: .bool, shape: []),
        TensorInfo(name: "caf\u{e9} \"quoted\"", dtype: .u8, shape: [3, 1]),
        TensorInfo(name: "empty.too", dtype: .f64, shape: [0]),
        TensorInfo(name: "double", dtype: .f64, shape: [2]),
    ]
    private let mixedMetadata: [(key: String, value: String)] = [("format", "pt"), ("note", "line\nbreak \u{1} \"q\" é")]

    private func writeAll(_ writer: CheckpointWriter, _ tensors: [TensorInfo], seed: UInt64 = 1) throws {
        for (i, tensor) in tensors.enumerated() {
            try bytes(for: tensor, seed: seed + UInt64(i)).withUnsafeBytes { try writer.write($0) }
        }
    }

    private func assertContents(of path: String, are tensors: [TensorInfo], seed: UInt64 = 1, file: StaticString = #filePath, line: UInt = #line) throws {
        let checkpoint = try Checkpoint(path: path)
        XCTAssertEqual(checkpoint.tensors.map(\.info), tensors, file: file, line: line)
        for (i, tensor) in tensors.enumerated() {
            XCTAssertEqual(try checkpoint.tensor(named: tensor.name)?.stored.allBytes(), bytes(for: tensor, seed: seed + UInt64(i)), tensor.name, file: file, line: line)
        }
    }

    // MARK: - One file

    func testSingleFileRoundTrip() throws {
        let folder = TemporaryDirectory()
        let path = folder.file("out.safetensors")
        let writer = try CheckpointWriter(destination: path, layout: .file, tensors: mixedTensors, metadata: mixedMetadata, overwrite: false, inputs: [])
        try writeAll(writer, mixedTensors)
        try writer.commit()

        let file = try SafeTensorsFile(path: path)
        XCTAssertEqual(file.tensors.map(\.info), mixedTensors)
        XCTAssertEqual(file.header.metadata?.map(\.key), ["format", "note"])
        XCTAssertEqual(file.header.metadata?.map(\.value), mixedMetadata.map(\.value))
        XCTAssertEqual(file.header.headerLength % 8, 0)
        XCTAssertEqual(file.header.dataLength, UInt64(mixedTensors.reduce(0) { $0 + $1.byteCount }))
        try assertContents(of: path, are: mixedTensors)
        XCTAssertEqual(folder.contents(), ["out.safetensors"])

        // The header is compact JSON, metadata first, padded with spaces.
        let header = String(decoding: try file.file.readBytes(at: 8, count: Int(file.header.headerLength)), as: UTF8.self)
        XCTAssertTrue(header.hasPrefix(#"{"__metadata__":{"format":"pt","note":"line\nbreak \u0001 \"q\" é"},"embed.weight":{"dtype":"F32","shape":[4,3],"data_offsets":[0,48]},"empty":{"dtype":"F16","shape":[0,7],"data_offsets":[48,48]},"scalar":{"dtype":"I64","shape":[],"data_offsets":[48,56]}"#), header)
        let trimmed = header.replacingOccurrences(of: " +$", with: "", options: .regularExpression)
        XCTAssertTrue(trimmed.hasSuffix(#""double":{"dtype":"F64","shape":[2],"data_offsets":[76,92]}}"#), header)
        XCTAssertLessThan(header.utf8.count - trimmed.utf8.count, 8)
    }

    func testFilesWithoutTensors() throws {
        let folder = TemporaryDirectory()
        for (i, metadata) in [nil, [(key: "format", value: "pt")]].enumerated() {
            let path = folder.file("empty\(i).safetensors")
            let writer = try CheckpointWriter(destination: path, layout: .file, tensors: [], metadata: metadata, overwrite: false, inputs: [])
            try writer.commit()
            let file = try SafeTensorsFile(path: path)
            XCTAssertTrue(file.tensors.isEmpty)
            XCTAssertEqual(file.header.metadata?.map(\.value), metadata?.map(\.value))
            XCTAssertEqual(FileSystem.size(of: path), file.header.dataStart)
        }
    }

    func testHeaderPaddingAndNoMetadata() throws {
        for nameLength in 1...16 {
            let tensors = [TensorInfo(name: String(repeating: "n", count: nameLength), dtype: .u8, shape: [1])]
            let header = SafeTensorsWriter.headerBytes(tensors: tensors, metadata: nil)
            XCTAssertEqual(header.count % 8, 0)
            let text = String(decoding: header, as: UTF8.self)
            XCTAssertTrue(text.hasPrefix("{\"\(tensors[0].name)\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}"), text)
            XCTAssertFalse(text.contains("__metadata__"))
        }
        XCTAssertEqual(String(decoding: SafeTensorsWriter.headerBytes(tensors: [], metadata: nil), as: UTF8.self), "{}      ")
        XCTAssertEqual(String(decoding: SafeTensorsWriter.headerBytes(tensors: [], metadata: []), as: UTF8.self), "{\"__metadata__\":{}}     ")
    }

    /// SafeTensorsWriter on its own, fed in odd-sized pieces.
    func testSafeTensorsWriterInPieces() throws {
        let folder = TemporaryDirectory()
        let path = folder.file("pieces.safetensors")
        let output = try FileSystem.createFile(path)
        let writer = try SafeTensorsWriter(output: output, tensors: mixedTensors, metadata: nil)
        let all = mixedTensors.enumerated().flatMap { bytes(for: $0.element, seed: 1 + UInt64($0.offset)) }
        var offset = 0
        var piece = 1
        while offset < all.count {
            let n = min(piece, all.count - offset)
            try all[offset..<(offset + n)].withUnsafeBytes { try writer.write($0) }
            offset += n
            piece += 3
        }
        try writer.finish()
        try assertContents(of: path, are: mixedTensors)
        XCTAssertNil(try SafeTensorsFile(path: path).header.metadata)
    }

    func testCopyUsesSmallBuffers() throws {
        let folder = TemporaryDirectory()
        let source = folder.file("source.safetensors")
        let writer = try CheckpointWriter(destination: source, layout: .file, tensors: mixedTensors, metadata: mixedMetadata, overwrite: false, inputs: [])
        try writeAll(writer, mixedTensors)
        try writer.commit()

        let input = try Checkpoint(path: source)
        let copyPath = folder.file("copy.safetensors")
        let copier = try CheckpointWriter(destination: copyPath, layout: .file, tensors: input.tensors.map(\.info), metadata: input.metadata, overwrite: false, inputs: input.filePaths)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 3, alignment: 1)
        defer { buffer.deallocate() }
        for tensor in input.tensors { try copier.copy(tensor.stored, buffer: buffer) }
        try copier.commit()
        XCTAssertEqual(try data(copyPath), try data(source))
    }

    // MARK: - Sharded output

    func testPlanShards() {
        let t = { (name: String, bytes: Int) in TensorInfo(name: name, dtype: .u8, shape: [bytes]) }
        let plan = CheckpointWriter.planShards([t("a", 40), t("b", 60), t("c", 1), t("d", 250), t("e", 10), t("f", 100), t("g", 0)], maximumBytes: 100)
        XCTAssertEqual(plan.map(\.fileName), (1...5).map { "model-0000\($0)-of-00005.safetensors" })
        XCTAssertEqual(plan.map { $0.tensors.map(\.name) }, [["a", "b"], ["c"], ["d"], ["e"], ["f", "g"]])
        // Every tensor once, in the order given (the writer takes bytes in that order).
        XCTAssertEqual(plan.flatMap(\.tensors).map(\.name), ["a", "b", "c", "d", "e", "f", "g"])
        // A shard holds more than the limit only when it is one tensor larger than the limit.
        for shard in plan where shard.tensors.reduce(0, { $0 + $1.byteCount }) > 100 {
            XCTAssertEqual(shard.tensors.count, 1)
        }

        let single = CheckpointWriter.planShards([t("a", 40), t("b", 60)], maximumBytes: 100)
        XCTAssertEqual(single.map(\.fileName), ["model.safetensors"])
        XCTAssertEqual(single[0].tensors.map(\.name), ["a", "b"])
        XCTAssertEqual(CheckpointWriter.planShards([], maximumBytes: 100).map(\.fileName), ["model.safetensors"])
        XCTAssertEqual(CheckpointWriter.planShards([t("huge", 1000)], maximumBytes: 1).map(\.fileName), ["model.safetensors"])

        let many = CheckpointWriter.planShards((0..<12).map { t("w\($0)", 10) }, maximumBytes: 10)
        XCTAssertEqual(many.first?.fileName, "model-00001-of-00012.safetensors")
        XCTAssertEqual(many.last?.fileName, "model-00012-of-00012.safetensors")
    }

    func testShardedRoundTripWithIndexAsTransformersWritesIt() throws {
        let folder = TemporaryDirectory()
        let destination = folder.file("model")
        writeFile(folder.file("config.json"), Array("{\"model_type\": \"llama\"}\n".utf8))
        writeFile(folder.file("tokenizer.json"), Array("{}".utf8))
        let plan = CheckpointWriter.planShards(mixedTensors, maximumBytes: 40)
        XCTAssertEqual(plan.count, 3)
        let writer = try CheckpointWriter(destination: destination, layout: .folder(shards: plan), tensors: mixedTensors, metadata: mixedMetadata,
                                          sideFiles: [try SideFile(path: folder.file("config.json"), name: "config.json"), try SideFile(path: folder.file("tokenizer.json"), name: "tokenizer.json")],
                                          overwrite: false, inputs: [])
        // All data in one call: the writer splits it across shards itself.
        let all = mixedTensors.enumerated().flatMap { bytes(for: $0.element, seed: 1 + UInt64($0.offset)) }
        try all.withUnsafeBytes { try writer.write($0) }
        try writer.commit()

        let names = try FileManager.default.contentsOfDirectory(atPath: destination).sorted()
        XCTAssertEqual(names, ["config.json", "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                               "model-00003-of-00003.safetensors", "model.safetensors.index.json", "tokenizer.json"])
        XCTAssertEqual(try data(destination + "/config.json"), try data(folder.file("config.json")))

        let checkpoint = try Checkpoint(path: destination)
        XCTAssertEqual(checkpoint.layout, .shardedFolder)
        XCTAssertEqual(checkpoint.auxiliaryFiles, ["config.json", "tokenizer.json"])
        try assertContents(of: destination, are: mixedTensors)
        for (shard, planned) in zip(checkpoint.shards, plan) {
            XCTAssertEqual(FileSystem.baseName(of: shard.path), planned.fileName)
            XCTAssertEqual(shard.tensors.map(\.info), planned.tensors)
            XCTAssertEqual(shard.header.metadata?.map(\.value), mixedMetadata.map(\.value))
        }

        let totalSize = mixedTensors.reduce(0) { $0 + $1.byteCount }
        let totalParameters = mixedTensors.reduce(0) { $0 + $1.elementCount }
        var expected = "{\n  \"metadata\": {\n    \"total_parameters\": \(totalParameters),\n    \"total_size\": \(totalSize)\n  },\n  \"weight_map\": {\n"
        let rows = plan.flatMap { shard in shard.tensors.map { ($0.name, shard.fileName) } }
            .sorted { $0.0.unicodeScalars.lexicographicallyPrecedes($1.0.unicodeScalars) }
            .map { "    \"\($0.0.replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "é", with: "\\u00e9"))\": \"\($0.1)\"" }
        expected += rows.joined(separator: ",\n") + "\n  }\n}\n"
        XCTAssertEqual(try String(contentsOfFile: destination + "/model.safetensors.index.json", encoding: .utf8), expected)
    }

    func testSingleShardIsWrittenWithoutIndex() throws {
        let folder = TemporaryDirectory()
        // planShards names a single shard model.safetensors; an explicit plan keeps its name (adapter_model.safetensors, ...).
        for (i, (plan, name)) in [(CheckpointWriter.planShards(mixedTensors, maximumBytes: 1 << 30), "model.safetensors"),
                                   ([("custom.safetensors", mixedTensors)], "custom.safetensors")].enumerated() {
            let destination = folder.file("out\(i)")
            let writer = try CheckpointWriter(destination: destination, layout: .folder(shards: plan), tensors: mixedTensors, metadata: nil, overwrite: false, inputs: [])
            try writeAll(writer, mixedTensors)
            try writer.commit()
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: destination), [name])
            XCTAssertEqual(try Checkpoint(path: destination).layout, .folder)
            try assertContents(of: destination, are: mixedTensors)
        }
    }

    func testTensorLargerThanTheShardLimitGetsItsOwnShard() throws {
        let tensors = [
            TensorInfo(name: "small.a", dtype: .f32, shape: [2]),
            TensorInfo(name: "huge", dtype: .f32, shape: [64]),
            TensorInfo(name: "small.b", dtype: .f16, shape: [3]),
            TensorInfo(name: "zero", dtype: .f16, shape: [0]),
        ]
        let plan = CheckpointWriter.planShards(tensors, maximumBytes: 16)
        XCTAssertEqual(plan.map { $0.tensors.map(\.name) }, [["small.a"], ["huge"], ["small.b", "zero"]])
        let folder = TemporaryDirectory()
        let destination = folder.file("model")
        let writer = try CheckpointWriter(destination: destination, layout: .folder(shards: plan), tensors: tensors, metadata: nil, overwrite: false, inputs: [])
        try writeAll(writer, tensors)
        try writer.commit()
        let checkpoint = try Checkpoint(path: destination)
        XCTAssertEqual(checkpoint.shardName(of: checkpoint.tensor(named: "huge")!), "model-00002-of-00003.safetensors")
        XCTAssertEqual(checkpoint.shards[1].tensors.map(\.name), ["huge"])
        try assertContents(of: destination, are: tensors)
    }

    /// Shards made only of zero-size tensors still get written, wherever they fall.
    func testShardsOfZeroSizeTensors() throws {
        let tensors = [
            TensorInfo(name: "z0", dtype: .f32, shape: [0]),
            TensorInfo(name: "a", dtype: .u8, shape: [4]),
            TensorInfo(name: "z1", dtype: .bf16, shape: [3, 0]),
            TensorInfo(name: "b", dtype: .u8, shape: [4]),
            TensorInfo(name: "z2", dtype: .f16, shape: [0]),
        ]
        let plan: [(fileName: String, tensors: [TensorInfo])] = [
            ("model-00001-of-00005.safetensors", [tensors[0]]),
            ("model-00002-of-00005.safetensors", [tensors[1]]),
            ("model-00003-of-00005.safetensors", [tensors[2]]),
            ("model-00004-of-00005.safetensors", [tensors[3]]),
            ("model-00005-of-00005.safetensors", [tensors[4]]),
        ]
        let folder = TemporaryDirectory()
        let destination = folder.file("model")
        let writer = try CheckpointWriter(destination: destination, layout: .folder(shards: plan), tensors: tensors, metadata: nil, overwrite: false, inputs: [])
        try writeAll(writer, tensors)
        try writer.commit()
        let checkpoint = try Checkpoint(path: destination)
        XCTAssertEqual(checkpoint.shards.count, 5)
        try assertContents(of: destination, are: tensors)
        let index = try String(contentsOfFile: destination + "/model.safetensors.index.json", encoding: .utf8)
        XCTAssertTrue(index.contains("\"total_parameters\": 8,\n    \"total_size\": 8\n"), index)
    }

    /// A folder that mirrors a sharded source (merge-lora) keeps the source
    /// index's members and metadata keys; total_size (and total_parameters,
    /// where the source has it) follow the new tensors.
    func testMirroredIndexKeepsTheSourceMetadata() throws {
        let tensors = [
            TensorInfo(name: "b.weight", dtype: .f32, shape: [3, 2]),
            TensorInfo(name: "a.weight", dtype: .f16, shape: [5]),
        ]
        let plan: [(fileName: String, tensors: [TensorInfo])] = [
            ("model-00001-of-00002.safetensors", [tensors[0]]), ("model-00002-of-00002.safetensors", [tensors[1]]),
        ]
        func write(_ sourceIndex: String, shards: [(fileName: String, tensors: [TensorInfo])]) throws -> String {
            let folder = TemporaryDirectory()
            let source = try XCTUnwrap(JSONParser.parse(Array(sourceIndex.utf8)).objectValue)
            let destination = folder.file("model")
            let writer = try CheckpointWriter(destination: destination, layout: .folder(shards: shards), tensors: shards.flatMap(\.tensors),
                                              metadata: nil, sourceIndex: source, overwrite: false, inputs: [])
            try writeAll(writer, shards.flatMap(\.tensors))
            try writer.commit()
            XCTAssertEqual(try Checkpoint(path: destination).layout, .shardedFolder)
            return try String(contentsOfFile: destination + "/model.safetensors.index.json", encoding: .utf8)
        }
        // Stale totals, an extra metadata key (one duplicated) and an extra top-level member.
        let withParameters = try write(#"{"weight_map": {"x": "y"}, "metadata": {"total_size": 1, "format": "pt", "total_parameters": 2, "format": "mlx"}, "producer": {"n": 1.50}}"#,
                                       shards: plan)
        XCTAssertEqual(withParameters, """
            {
              "metadata": {
                "format": "mlx",
                "total_parameters": 11,
                "total_size": 34
              },
              "producer": {
                "n": 1.50
              },
              "weight_map": {
                "a.weight": "model-00002-of-00002.safetensors",
                "b.weight": "model-00001-of-00002.safetensors"
              }
            }

            """)
        // An index as older transformers write it: total_size only, and none is added.
        let sizeOnly = try write(#"{"metadata": {"total_size": 1}, "weight_map": {}}"#, shards: plan)
        XCTAssertTrue(sizeOnly.hasPrefix("{\n  \"metadata\": {\n    \"total_size\": 34\n  },\n"), sizeOnly)
        XCTAssertFalse(sizeOnly.contains("total_parameters"), sizeOnly)
        // A sharded source of one shard keeps its index.
        let one = try write(#"{"metadata": {"total_size": 1, "note": "kept"}, "weight_map": {}}"#, shards: [("model-00001-of-00001.safetensors", tensors)])
        XCTAssertTrue(one.contains("\"note\": \"kept\",\n    \"total_size\": 34\n"), one)
        XCTAssertTrue(one.contains("\"a.weight\": \"model-00001-of-00001.safetensors\""), one)
    }

    // MARK: - Byte identity with the reference writer

    /// Copies a safetensors file tensor by tensor in its own order.
    private func copy(_ source: String, to destination: String, viaCheckpointWriter: Bool) throws {
        let input = try SafeTensorsFile(path: source)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 12, alignment: 64)
        defer { buffer.deallocate() }
        let stored = input.tensors.map { StoredTensor(info: $0.info, file: input.file, offset: input.header.dataStart + $0.dataOffsets.lowerBound) }
        if viaCheckpointWriter {
            let writer = try CheckpointWriter(destination: destination, layout: .file, tensors: input.tensors.map(\.info), metadata: input.header.metadata, overwrite: false, inputs: [source])
            for tensor in stored { try writer.copy(tensor, buffer: buffer) }
            try writer.commit()
        } else {
            let writer = try SafeTensorsWriter(output: try FileSystem.createFile(destination), tensors: input.tensors.map(\.info), metadata: input.header.metadata)
            for tensor in stored { try writer.copy(tensor, buffer: buffer) }
            try writer.finish()
        }
    }

    func testCopiesOfReferenceFilesAreByteIdentical() throws {
        let folder = TemporaryDirectory()
        var sources = try FileManager.default.contentsOfDirectory(atPath: Fixtures.sample("sharded_llama"))
            .filter { $0.hasSuffix(".safetensors") }.sorted().map { Fixtures.sample("sharded_llama/" + $0) }
        XCTAssertEqual(sources.count, 11)
        sources += [Fixtures.sample("lora_llama_basic/base/model.safetensors"), Fixtures.sample("lora_llama_basic/adapter/adapter_model.safetensors"),
                    Fixtures.path("foundation/python_escapes.safetensors")]
        for (i, source) in sources.enumerated() {
            for viaCheckpointWriter in [false, true] {
                let destination = folder.file("copy\(i)-\(viaCheckpointWriter).safetensors")
                try copy(source, to: destination, viaCheckpointWriter: viaCheckpointWriter)
                XCTAssertEqual(try data(destination), try data(source), source)
            }
        }
    }

    /// The whole sharded sample, rewritten with its own shard plan: every
    /// shard, the index and config.json come out byte-identical.
    func testShardedSampleRewrittenIsByteIdentical() throws {
        let sample = Fixtures.sample("sharded_llama")
        let input = try Checkpoint(path: sample)
        let plan = input.shards.map { shard in (fileName: FileSystem.baseName(of: shard.path), tensors: shard.tensors.map(\.info)) }
        let folder = TemporaryDirectory()
        let destination = folder.file("copy")
        let writer = try CheckpointWriter(destination: destination, layout: .folder(shards: plan), tensors: input.tensors.map(\.info), metadata: input.metadata,
                                          sideFiles: try input.auxiliaryFiles.map { try SideFile(path: sample + "/" + $0, name: $0) }, overwrite: false, inputs: input.filePaths)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 64)
        defer { buffer.deallocate() }
        for tensor in input.tensors { try writer.copy(tensor.stored, buffer: buffer) }
        try writer.commit()
        let names = try FileManager.default.contentsOfDirectory(atPath: sample).sorted()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: destination).sorted(), names)
        for name in names {
            XCTAssertEqual(try data(destination + "/" + name), try data(sample + "/" + name), name)
        }
    }
}
