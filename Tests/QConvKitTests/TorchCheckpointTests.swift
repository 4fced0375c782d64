import Foundation
import XCTest
import QConvKit
import QConvTestSupport

/// PyTorch checkpoints read without running them: the zip archive, the
/// pickle machine, the state dict and its views, against the files torch wrote.
final class TorchCheckpointTests: XCTestCase {
    static func fixture(_ name: String) -> String { Fixtures.path("torch_bin/" + name) }

    /// Every contiguous tensor's bytes are those safetensors' `save_file` wrote for it.
    func testTensorsAreTheBytesTorchSaved() throws {
        for folder in ["single", "shared_storage", "module_state", "new_dtypes"] {
            let checkpoint = try TorchCheckpointFile(path: Self.fixture(folder + "/pytorch_model.bin"))
            let reference = try SafeTensorsFile(path: Self.fixture(folder + "/reference.safetensors"))
            XCTAssertEqual(Set(checkpoint.tensors.map(\.info.name)), Set(reference.tensors.map(\.name)), folder)
            for tensor in checkpoint.tensors {
                let entry = try XCTUnwrap(reference.entry(named: tensor.info.name))
                XCTAssertEqual(tensor.info, entry.info, "\(folder) \(tensor.info.name)")
                guard case .contiguous(let offset) = tensor.placement else { continue }
                XCTAssertEqual(try checkpoint.file.readBytes(at: offset, count: tensor.info.byteCount), try reference.bytes(of: entry),
                               "\(folder) \(tensor.info.name)")
            }
        }
    }

    /// Views of one storage: a slice is contiguous at an offset, a transpose is strided, a tied tensor is the same bytes.
    func testViewsOfOneStorage() throws {
        let checkpoint = try TorchCheckpointFile(path: Self.fixture("shared_storage/pytorch_model.bin"))
        func tensor(_ name: String) throws -> TorchCheckpointFile.Tensor { try XCTUnwrap(checkpoint.tensors.first { $0.info.name == name }) }
        let weight = try tensor("a.weight"), view = try tensor("a.view"), transposed = try tensor("a.transposed"), tied = try tensor("b.tied")
        guard case .contiguous(let start) = weight.placement, case .contiguous(let viewStart) = view.placement else { return XCTFail("not contiguous") }
        XCTAssertEqual(viewStart, start + 24 * 4)
        XCTAssertEqual(tied.placement, weight.placement)
        XCTAssertEqual(transposed.placement, .strided(first: start, layout: StridedLayout(shape: [12, 8], strides: [1, 12])))
        XCTAssertEqual(Set([weight, view, transposed, tied].map(\.storage)).count, 1)
        XCTAssertEqual(try tensor("e.scalar").info.shape, [])
        XCTAssertEqual(try tensor("d.i64").info.dtype, .i64)
        XCTAssertEqual(try tensor("c.bf16").info.dtype, .bf16)
        // torch's own names: the Parameter, float8 over an untyped storage, and a strided float8 view.
        let newer = try TorchCheckpointFile(path: Self.fixture("new_dtypes/pytorch_model.bin"))
        XCTAssertEqual(newer.tensors.map(\.info.dtype), [.f32, .f8e4m3, .f8e5m2, .u16])
        XCTAssertEqual(newer.tensors[2].placement, .strided(first: { guard case .strided(let first, _) = newer.tensors[2].placement else { return 0 }; return first }(),
                                                            layout: StridedLayout(shape: [4, 5], strides: [1, 4])))
    }

    /// The files of hostile.json: each refused, and the marker a run pickle would create never appears.
    func testHostileFilesAreRefusedAndNothingRuns() throws {
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.fixture("hostile.json")))) as! [String: Any]
        let marker = manifest["marker"] as! String
        let existedBefore = FileManager.default.fileExists(atPath: marker)
        for name in manifest["files"] as! [String] {
            let path = Self.fixture("hostile/" + name)
            XCTAssertThrowsError(try Model.open(path), name) { error in
                XCTAssertEqual((error as? QConvError)?.category.exitCode, 3, "\(name): \(error)")
                XCTAssertTrue("\(error)".hasPrefix(path), "\(error)")
            }
            XCTAssertThrowsError(try TorchCheckpointFile(path: path), name)
        }
        XCTAssertThrowsError(try TorchCheckpointFile(path: Self.fixture("hostile/os_system.bin"))) { error in
            XCTAssertEqual(error as? TorchCheckpointError, .globalRefused(file: Self.fixture("hostile/os_system.bin"), global: "os.system"))
            XCTAssertTrue("\(error)".contains("refused: the pickle calls os.system; qconv never runs code from a checkpoint"), "\(error)")
        }
        XCTAssertThrowsError(try TorchCheckpointFile(path: Self.fixture("hostile/builtins_eval.bin"))) { error in
            XCTAssertEqual(error as? TorchCheckpointError, .globalRefused(file: Self.fixture("hostile/builtins_eval.bin"), global: "builtins.eval"))
        }
        XCTAssertThrowsError(try TorchCheckpointFile(path: Self.fixture("hostile/short_storage.bin"))) { error in
            XCTAssertEqual(error as? TorchCheckpointError, .storageSizeMismatch(file: Self.fixture("hostile/short_storage.bin"), entry: "archive/data/0",
                                                                                declared: 64, actual: 20))
        }
        XCTAssertThrowsError(try Model.open(Self.fixture("hostile/legacy_format.bin"))) { error in
            XCTAssertTrue("\(error)".contains("legacy PyTorch checkpoint"), "\(error)")
        }
        if !existedBefore { XCTAssertFalse(FileManager.default.fileExists(atPath: marker), "a pickle was run: \(marker) exists") }
    }

    /// A pickle that calls os.system to create a file in the test's folder: refused, the file never made.
    func testASystemCallInThePickleIsNeverMade() throws {
        let directory = TemporaryDirectory()
        let marker = directory.file("executed")
        let path = directory.file("hostile.bin")
        for (module, name) in [("posix", "system"), ("os", "system"), ("subprocess", "call"), ("builtins", "exec"), ("torch", "load")] {
            var p = Pickle()
            p.global(module, name)
            p.string("touch " + marker)
            p.op(0x85, 0x52, 0x2E)  // TUPLE1, REDUCE, STOP
            try writeTorchCheckpoint(path, pickle: p.bytes)
            XCTAssertThrowsError(try TorchCheckpointFile(path: path)) { error in
                guard case .globalRefused? = error as? TorchCheckpointError else { return XCTFail("\(module).\(name): \(error)") }
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: marker))
        }
    }

    /// One crafted file per rule of the pickle and the state dict.
    func testCraftedStateDictsBreakingOneRuleEach() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("crafted.bin")
        let storage = ["0": floatBytes(12)]
        func expect(_ pickle: [UInt8], storages: [String: [UInt8]] = storage, line: UInt = #line, _ check: (TorchCheckpointError) -> Bool) throws {
            try writeTorchCheckpoint(path, pickle: pickle, storages: storages)
            XCTAssertThrowsError(try TorchCheckpointFile(path: path), line: line) { error in
                guard let error = error as? TorchCheckpointError, check(error) else { return XCTFail("\(error)", line: line) }
                XCTAssertTrue(error.description.hasPrefix(path), error.description, line: line)
            }
        }
        func one(_ shape: [Int], _ strides: [Int], offset: Int = 0, count: Int = 12) -> [UInt8] {
            Pickle.stateDict([("w", { $0.tensor(key: "0", count: count, offset: offset, shape: shape, strides: strides) })])
        }
        // A valid one first.
        try writeTorchCheckpoint(path, pickle: one([3, 4], [4, 1]), storages: storage)
        XCTAssertEqual(try TorchCheckpointFile(path: path).tensors.map(\.info.shape), [[3, 4]])

        try expect(Pickle.stateDict([("w", { $0.tensor(key: "0", count: 12, shape: [12], strides: [1]) }),
                                     ("w", { $0.tensor(key: "0", count: 12, shape: [12], strides: [1]) })])) { $0 == .duplicateKey(file: path, key: "w") }
        try expect(one([3, 4], [4, -1])) { if case .negativeNumber(_, "w", "stride[1]", -1) = $0 { return true }; return false }
        try expect(one([3, 4], [4, 1], offset: -2)) { if case .negativeNumber(_, "w", "storage offset", -2) = $0 { return true }; return false }
        try expect(one([-3, 4], [4, 1])) { if case .negativeNumber(_, "w", "size[0]", -3) = $0 { return true }; return false }
        try expect(one([1 << 40, 1 << 40], [0, 0])) { if case .tensorTooLarge(_, "w", _) = $0 { return true }; return false }
        try expect(one([1 << 20, 1 << 20], [1, 1])) { if case .viewOutsideStorage(_, "w", _, 12) = $0 { return true }; return false }
        try expect(one([4, 4], [4, 1])) { if case .viewOutsideStorage(_, "w", "15", 12) = $0 { return true }; return false }
        try expect(one([3, 4], [4, 1], offset: 1)) { if case .viewOutsideStorage(_, "w", "12", 12) = $0 { return true }; return false }
        try expect(one([3, 4], [4])) { $0 == .invalidRank(file: path, tensor: "w", sizes: 2, strides: 1) }
        try expect(one([3, 4], [4, 1], count: 16)) { $0 == .storageSizeMismatch(file: path, entry: "archive/data/0", declared: 64, actual: 48) }
        try expect(one([3, 4], [4, 1]), storages: [:]) { $0 == .storageMissing(file: path, tensor: "w", entry: "archive/data/0") }
        try expect(Pickle.stateDict([("a", { $0.tensor(key: "0", count: 12, shape: [12], strides: [1]) }),
                                     ("b", { $0.tensor(storage: "HalfStorage", key: "0", count: 24, shape: [24], strides: [1]) })])) {
            $0 == .storageRedeclared(file: path, entry: "archive/data/0")
        }
        try expect(Pickle.stateDict([("epoch", { $0.int(3) })])) { $0 == .notATensor(file: path, key: "epoch", found: "an int") }
        var list = Pickle()
        list.op(0x5D, 0x2E)
        try expect(list.bytes) { $0 == .notAStateDict(file: path, found: "a list") }
        var deep = Pickle()
        deep.bytes += [UInt8](repeating: 0x28, count: 200)
        try expect(deep.bytes) { if case .pickleTooDeep(_, _, 64) = $0 { return true }; return false }
        var memo = Pickle()
        memo.op(0x68, 7, 0x2E)
        try expect(memo.bytes) { $0 == .memoMissing(file: path, position: 2, index: 7) }
        var underflow = Pickle()
        underflow.op(0x52, 0x2E)
        try expect(underflow.bytes) { $0 == .stackUnderflow(file: path, position: 2, opcode: 0x52) }
        var opcode = Pickle()
        opcode.op(0x49)  // INT (protocol 0 text)
        try expect(opcode.bytes) { $0 == .unsupportedOpcode(file: path, opcode: 0x49, position: 2) }
        try expect(Array(one([3, 4], [4, 1]).dropLast(3))) { if case .pickleTruncated = $0 { return true }; return false }
        var sparse = Pickle()
        sparse.global("torch._utils", "_rebuild_sparse_tensor")
        try expect(sparse.bytes) { if case .globalNotRead(_, "torch._utils._rebuild_sparse_tensor", "a sparse tensor") = $0 { return true }; return false }
        var setOnList = Pickle()
        setOnList.op(0x5D, 0x4B, 1, 0x4B, 2, 0x73, 0x2E)
        try expect(setOnList.bytes) { if case .wrongOperand(_, 7, "SETITEM", "a dict", "a list") = $0 { return true }; return false }
        var long = Pickle()
        long.op(0x8A, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x2E)
        try expect(long.bytes) { $0 == .integerTooLarge(file: path, position: 2, bytes: 9) }
    }

    /// Damaged archives: cut short anywhere, a directory past the end, compressed entries, no data.pkl.
    func testDamagedArchivesAreRefused() throws {
        let directory = TemporaryDirectory()
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.fixture("shared_storage/pytorch_model.bin"))))
        let path = directory.file("damaged.bin")
        // Cut anywhere: always an error of the archive or the checkpoint, never a crash.
        for length in stride(from: 0, to: original.count, by: 37) {
            writeFile(path, Array(original[0..<length]))
            XCTAssertThrowsError(try Model.open(path), "cut at \(length)") { error in
                XCTAssertEqual((error as? QConvError)?.category.exitCode, 3, "cut at \(length): \(error)")
            }
        }
        writeFile(path, Array(original.dropLast(10)))
        XCTAssertThrowsError(try TorchCheckpointFile(path: path)) { XCTAssertEqual($0 as? ZipArchiveError, .noEndRecord(file: path)) }
        // The zip64 end record says the directory starts past the end of the file.
        let zip64 = original.count - 22 - 20 - 56
        var past = original
        for i in 0..<8 { past[zip64 + 48 + i] = UInt8(truncatingIfNeeded: UInt64(original.count + 100) >> (8 * i)) }
        writeFile(path, past)
        XCTAssertThrowsError(try TorchCheckpointFile(path: path)) { error in
            guard case .directoryOutOfBounds? = error as? ZipArchiveError else { return XCTFail("\(error)") }
        }
        // The first entry marked as deflated.
        let directoryStart = Int(original[(zip64 + 48)..<(zip64 + 56)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        var compressed = original
        compressed[directoryStart + 10] = 8
        writeFile(path, compressed)
        XCTAssertThrowsError(try TorchCheckpointFile(path: path)) { error in
            XCTAssertEqual(error as? ZipArchiveError, .compressedEntry(file: path, entry: "pytorch_model/data.pkl", method: 8))
        }
        // A zip of something else.
        try writeZip(path, [("notes/readme.txt", Array("hello".utf8))])
        XCTAssertThrowsError(try TorchCheckpointFile(path: path)) { error in
            guard case let .unsupportedFormat(_, what)? = error as? ModelFormatError else { return XCTFail("\(error)") }
            XCTAssertTrue(what.hasPrefix("a zip archive that is not a PyTorch checkpoint"), what)
        }
    }

    /// What `TorchCheckpointWriter` writes reads back as written.
    func testWrittenCheckpointsReadBack() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("written.bin")
        let tensors = [TensorInfo(name: "a", dtype: .f32, shape: [2, 3]), TensorInfo(name: "b", dtype: .f16, shape: []),
                       TensorInfo(name: "c", dtype: .f8e4m3, shape: [5]), TensorInfo(name: "d", dtype: .i64, shape: [1, 1, 1, 2])]
        try TorchCheckpointWriter.write(to: path, tensors: tensors, overwrite: false) { i, write in
            let bytes = (0..<tensors[i].byteCount).map { UInt8(truncatingIfNeeded: $0 * 7 + i) }
            try bytes.withUnsafeBytes { try write($0) }
        }
        let checkpoint = try TorchCheckpointFile(path: path)
        XCTAssertEqual(checkpoint.tensors.map(\.info), tensors)
        for (i, tensor) in checkpoint.tensors.enumerated() {
            guard case .contiguous(let offset) = tensor.placement else { return XCTFail("\(tensor.info.name) is not contiguous") }
            XCTAssertEqual(offset % 64, 0)
            XCTAssertEqual(try checkpoint.file.readBytes(at: offset, count: tensor.info.byteCount),
                           (0..<tensors[i].byteCount).map { UInt8(truncatingIfNeeded: $0 * 7 + i) })
        }
    }
}
