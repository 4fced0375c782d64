import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// `Model.open`: what a path is comes from its bytes and its folder's files,
/// never from its name, and every format gives the same uniform model.
final class FormatSeamTests: XCTestCase {
    func testEachFormatIsRecognizedByItsBytesAndGivesAModel() throws {
        let directory = TemporaryDirectory()
        let container = try makeSampleContainer(in: directory)
        let sharded = Fixtures.sample("sharded_llama")
        let folder = Fixtures.sample("lora_llama_basic/base")
        let file = folder + "/model.safetensors"
        // Names that lie about what the files are.
        let containerNamedSafetensors = directory.file("container.safetensors")
        try FileManager.default.copyItem(atPath: container, toPath: containerNamedSafetensors)
        let safetensorsNamedQC = directory.file("weights.qc")
        try FileManager.default.copyItem(atPath: file, toPath: safetensorsNamedQC)

        let cases: [(String, ModelFormat)] = [
            (container, .container), (containerNamedSafetensors, .container), (sharded, .safetensorsShardedFolder),
            (folder, .safetensorsFolder), (file, .safetensorsFile), (safetensorsNamedQC, .safetensorsFile),
        ]
        for (path, format) in cases {
            XCTAssertEqual(try Model.format(of: path), format, path)
            let model = try Model.open(path)
            XCTAssertEqual(model.format, format, path)
            XCTAssertFalse(model.tensors.isEmpty, path)
            for tensor in model.tensors {
                XCTAssertEqual(tensor.parts.map(\.layout), tensor.scheme.parts(for: tensor.info), tensor.name)
                XCTAssertEqual(tensor.parts.map(\.bytes.checksum).allSatisfy { $0 != nil }, format == .container, tensor.name)
            }
        }
        // The container and its source describe the same tensors; the container says how it stores them.
        let source = try Model.open(sharded), quantized = try Model.open(container)
        XCTAssertEqual(quantized.tensors.map(\.info), source.tensors.map(\.info))
        XCTAssertEqual(Set(quantized.tensors.map(\.scheme.name)), ["raw", "nf4"])
        XCTAssertEqual(quantized.sideFiles.map(\.name), source.sideFiles.map(\.name))
        XCTAssertEqual(try quantized.sideFiles[0].readAll(), try source.sideFiles[0].readAll())
        XCTAssertEqual(source.files.count, 11)
        XCTAssertNotNil(source.index)
        XCTAssertNotNil(quantized.provenance?["qconv_version"])
    }

    func testOtherFormatsAreNamedAndRefused() throws {
        let directory = TemporaryDirectory()
        let cases: [(name: String, bytes: [UInt8], what: String)] = [
            ("model.gguf", Array("GGUF".utf8) + [3, 0, 0, 0] + [UInt8](repeating: 0, count: 24), "a GGUF file"),
            ("old.pt", [0x80, 0x02, 0x8A, 0x0A] + [UInt8](repeating: 0x6C, count: 20), "a Python pickle"),
            ("model.safetensors", [0x80, 0x03, 0x7D, 0x71] + [UInt8](repeating: 0x00, count: 20), "a Python pickle"),
        ]
        for entry in cases {
            let path = directory.file(entry.name)
            writeFile(path, entry.bytes)
            XCTAssertThrowsError(try Model.open(path), entry.name) { error in
                guard case let .unsupportedFormat(errorPath, what)? = error as? ModelFormatError else { return XCTFail("\(entry.name): \(error)") }
                XCTAssertEqual(errorPath, path)
                XCTAssertTrue(what.hasPrefix(entry.what), what)
                XCTAssertEqual((error as? QConvError)?.category.exitCode, 3)
            }
        }
        // A zip archive that is not a PyTorch checkpoint.
        try writeZip(directory.file("pytorch_model.bin"), [("notes.txt", Array("hello".utf8))])
        XCTAssertThrowsError(try Model.open(directory.file("pytorch_model.bin"))) { error in
            guard case let .unsupportedFormat(_, what)? = error as? ModelFormatError else { return XCTFail("\(error)") }
            XCTAssertTrue(what.hasPrefix("a zip archive that is not a PyTorch checkpoint"), what)
        }
        // A folder with nothing qconv reads.
        try FileManager.default.createDirectory(atPath: directory.file("empty"), withIntermediateDirectories: false)
        XCTAssertThrowsError(try Model.open(directory.file("empty"))) { error in
            XCTAssertEqual(error as? ModelFormatError, .noModel(folder: directory.file("empty")))
        }
        XCTAssertThrowsError(try Model.open(directory.file("missing"))) { error in
            XCTAssertEqual((error as? IOError)?.errno, .noSuchFileOrDirectory)
        }
    }

    /// A 640-byte safetensors header has a length whose first bytes are a
    /// pickle's magic (0x80 0x02): the header's `{` tells them apart.
    func testSafetensorsWithAPickleLikeLengthIsStillSafetensors() throws {
        let directory = TemporaryDirectory()
        var header = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        header += String(repeating: " ", count: 640 - header.utf8.count)
        let path = directory.file("w.safetensors")
        writeFile(path, craftSafetensors(header: header, data: [0, 0, 128, 63]))
        XCTAssertEqual(try Model.open(path).tensors.map(\.name), ["w"])
    }

    func testStoredPartChecksumsAreCheckedWhenRead() throws {
        let directory = TemporaryDirectory()
        let path = try makeSampleContainer(in: directory)
        let container = try ContainerFile(path: path)
        let entry = try XCTUnwrap(container.tensors.first { $0.scheme.isQuantized })
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[Int(container.dataStart + entry.parts[1].offset)] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: path))
        let tensor = try XCTUnwrap(try Model.open(path).tensor(named: entry.name))
        XCTAssertThrowsError(try tensor.parts[1].readAll()) { error in
            guard case let .checksumMismatch(_, name, part, _, _)? = error as? ContainerError else { return XCTFail("\(error)") }
            XCTAssertEqual(name, entry.name)
            XCTAssertEqual(part, entry.parts[1].name.rawValue)
        }
        XCTAssertNoThrow(try tensor.parts[0].readAll())
    }
}

/// The support types every pipeline shares.
final class SupportTests: XCTestCase {
    func testChunkPlanHoldsWholeUnitsAndCoversTheTensor() {
        for (n, unit) in [(0, 64), (1, 64), (100, 64), (1 << 20, 64), ((1 << 20) + 3, 5504), (12_345, 22_016), (7, 3)] {
            let plan = ChunkPlan(elementCount: n, unit: unit)
            XCTAssertEqual(plan.chunk % unit, 0)
            XCTAssertEqual(plan.tile % unit, 0)
            XCTAssertLessThanOrEqual(plan.chunk, max(unit, ChunkPlan.defaultChunkElements))
            var covered = 0
            for c in 0..<plan.chunkCount {
                let range = plan.chunkRange(c)
                XCTAssertEqual(range.lowerBound, covered)
                XCTAssertEqual(range.lowerBound % unit, 0)
                let tiles = plan.tiles(of: range)
                XCTAssertEqual(tiles.first?.lowerBound, range.lowerBound)
                XCTAssertEqual(tiles.last?.upperBound, range.upperBound)
                XCTAssertTrue(tiles.allSatisfy { $0.lowerBound % unit == 0 && $0.count <= plan.tile })
                covered = range.upperBound
            }
            XCTAssertEqual(covered, n)
        }
        // Rows of 5504 that also start at multiples of 4 rows' worth of a source alignment.
        let rows = ChunkPlan(rowsOf: 5504, elementCount: 5504 * 100, alignment: 5504 * 4)
        XCTAssertEqual(rows.unit, 5504 * 4)
    }

    func testLockedCountsEveryIncrementAndWaitsForItsCondition() throws {
        let counter = Locked(0)
        try parallelFor(1000, threads: 8) { _ in counter.withLock { $0 += 1 } }
        XCTAssertEqual(counter.withLock { $0 }, 1000)

        let stage = Locked(0)
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            stage.withLock(when: { $0 == 1 }) { $0 = 2 }
        }
        stage.withLockWakingWaiters { $0 = 1 }
        group.wait()
        XCTAssertEqual(stage.withLock { $0 }, 2)
    }

    func testChunksAreConsumedInOrderWhateverTheThreads() throws {
        for threads in [1, 2, 5] {
            let results = SlotValues(slots: 4, initial: -1)
            var seen: [Int] = []
            try computeChunksInOrder(count: 37, slots: 4, threads: threads, compute: { c, slot in
                results[slot] = c * c
            }, inOrder: { c, slot in
                XCTAssertEqual(results[slot], c * c)
                seen.append(c)
            })
            XCTAssertEqual(seen, Array(0..<37))
        }
        struct Failure: Error {}
        XCTAssertThrowsError(try computeChunksInOrder(count: 50, slots: 4, threads: 3, compute: { c, _ in
            if c == 20 { throw Failure() }
        }, inOrder: { _, _ in })) { XCTAssertTrue($0 is Failure) }
    }

    func testProgressReportsToItsHandlerOnly() {
        let events = Locked<[ProgressEvent]>([])
        let counter = ProgressCounter(label: "work", total: 10) { event in events.withLock { $0.append(event) } }
        counter.advance(by: 4, item: "a")
        counter.advance(by: 6, item: "b")
        counter.finish()
        XCTAssertEqual(events.withLock { $0 }, [.advanced(label: "work", done: 4, total: 10, item: "a"),
                                                .advanced(label: "work", done: 10, total: 10, item: "b"), .finished(label: "work")])
        ProgressCounter(label: "silent", total: 1, handler: nil).advance(by: 1)
    }
}

/// The shares of a job array's parts.
final class OutputPartTests: XCTestCase {
    func testPartsCoverEveryShardOnceBalancedByBytes() {
        let cases: [[UInt64]] = [[], [10], [5, 5, 5, 5], [100, 1, 1, 1, 1, 100], Array(repeating: 7, count: 11), [0, 0, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
        for sizes in cases {
            for count in [1, 2, 3, 7] {
                let parts = (1...count).map { OutputPart(index: $0, count: count)!.shards(ofSizes: sizes) }
                XCTAssertEqual(parts.flatMap { $0 }.sorted(), Array(sizes.indices), "\(sizes) in \(count)")
                XCTAssertEqual(parts.flatMap { $0 }, Array(sizes.indices), "contiguous runs, in order")
                // No part holds more than its share plus one shard.
                let total = sizes.reduce(0, +), largest = sizes.max() ?? 0
                for part in parts {
                    XCTAssertLessThanOrEqual(part.reduce(UInt64(0)) { $0 + sizes[$1] }, total / UInt64(count) + largest + 1, "\(sizes) \(count)")
                }
            }
        }
        XCTAssertEqual(OutputPart(index: 1, count: 4)!.shards(ofSizes: [5, 5, 5, 5]), [0])
        XCTAssertEqual(OutputPart(index: 4, count: 4)!.shards(ofSizes: [5, 5, 5, 5]), [3])
        XCTAssertNil(OutputPart(index: 0, count: 3))
        XCTAssertNil(OutputPart(index: 4, count: 3))
    }
}
