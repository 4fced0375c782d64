import Glibc
import XCTest
import QConvKit
import QConvTestSupport

/// The library side of `qconv inspect`, the I/O primitives under it, and `parallelFor`.
final class InspectionTests: XCTestCase {
    func testStatisticsDoNotDependOnChunking() throws {
        var rng = SplitMix64(seed: 3)
        var values = (0..<1000).map { _ in Float(bitPattern: UInt32.random(in: 0x3000_0000...0x4100_0000, using: &rng)) * (Bool.random(using: &rng) ? 1 : -1) }
        values[10] = .nan
        values[500] = .infinity
        values[999] = -.infinity
        let folder = TemporaryDirectory()
        let path = folder.file("values.safetensors")
        writeFile(path, CraftedInputs.validF32("v", values))
        let stored = try XCTUnwrap(Checkpoint(path: path).tensor(named: "v")?.stored)

        let whole = try XCTUnwrap(TensorStatistics.compute(stored))
        let finite = values.filter(\.isFinite).map(Double.init)
        let mean = finite.reduce(0, +) / Double(finite.count)
        XCTAssertEqual(whole.count, 1000)
        XCTAssertEqual(whole.finiteCount, 997)
        XCTAssertEqual(whole.nanCount, 1)
        XCTAssertEqual(whole.infinityCount, 2)
        XCTAssertEqual(whole.min, finite.min())
        XCTAssertEqual(whole.max, finite.max())
        XCTAssertEqual(whole.absmax, finite.map(abs).max())
        XCTAssertEqual(whole.mean, mean, accuracy: abs(mean) * 1e-12)
        let std = (finite.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(finite.count)).squareRoot()
        XCTAssertEqual(whole.std, std, accuracy: std * 1e-12)
        for chunk in [1, 7, 64, 999] {
            let chunked = try XCTUnwrap(TensorStatistics.compute(stored, chunkElements: chunk))
            XCTAssertEqual(chunked.count, whole.count)
            XCTAssertEqual(chunked.nanCount, whole.nanCount)
            XCTAssertEqual(chunked.infinityCount, whole.infinityCount)
            XCTAssertEqual(chunked.min, whole.min)
            XCTAssertEqual(chunked.max, whole.max)
            XCTAssertEqual(chunked.mean, whole.mean, accuracy: abs(whole.mean) * 1e-12, "chunk \(chunk)")
            XCTAssertEqual(chunked.std, whole.std, accuracy: whole.std * 1e-12, "chunk \(chunk)")
        }
    }

    func testStatisticsOfEveryFloatDType() throws {
        let values: [Float] = [0.5, -1.25, 3, 0]
        let folder = TemporaryDirectory()
        let tensors = [DType.f32, .f16, .bf16].map { TensorInfo(name: $0.rawValue, dtype: $0, shape: [4]) } + [TensorInfo(name: "F64", dtype: .f64, shape: [2, 2])]
        let path = folder.file("all.safetensors")
        let writer = try CheckpointWriter(destination: path, layout: .file, tensors: tensors, metadata: nil, overwrite: false, inputs: [])
        for tensor in tensors {
            if tensor.dtype == .f64 {
                try values.flatMap { withUnsafeBytes(of: Double($0).bitPattern.littleEndian, Array.init) }.withUnsafeBytes { try writer.write($0) }
            } else {
                var bytes = [UInt8](repeating: 0, count: tensor.byteCount)
                values.withUnsafeBufferPointer { src in bytes.withUnsafeMutableBytes { FloatConversion.encode(src.baseAddress!, count: 4, as: tensor.dtype, into: $0.baseAddress!) } }
                try bytes.withUnsafeBytes { try writer.write($0) }
            }
        }
        try writer.commit()
        let report = try Inspection.inspect(path: path, statistics: true, threads: 3)
        XCTAssertEqual(report.tensors.map(\.name), ["F32", "F16", "BF16", "F64"])
        for tensor in report.tensors {
            let stats = try XCTUnwrap(tensor.statistics, tensor.name)
            XCTAssertEqual(stats.min, -1.25, tensor.name)
            XCTAssertEqual(stats.max, 3, tensor.name)
            XCTAssertEqual(stats.mean, 0.5625, tensor.name)
            XCTAssertEqual(stats.absmax, 3, tensor.name)
        }
        XCTAssertEqual(report.dtypeTotals.map(\.dtype), ["F32", "F16", "BF16", "F64"])
        XCTAssertEqual(report.dtypeTotals.map(\.total.bytes), [16, 8, 8, 32])
        XCTAssertEqual(report.parameterCount, 16)
        XCTAssertEqual(report.tensorBytes, 64)
        XCTAssertEqual(report.fileBytes, FileSystem.size(of: path))
    }

    func testReportJSONShape() throws {
        let report = try Inspection.inspect(path: Fixtures.sample("sharded_llama"), statistics: false, threads: 1)
        let summary = try XCTUnwrap(report.json(includeTensors: false).objectValue)
        XCTAssertEqual(summary.keys, ["path", "format", "tensor_count", "parameter_count", "tensor_bytes", "file_bytes", "files", "auxiliary_files", "dtypes", "metadata"])
        let full = try XCTUnwrap(report.json(includeTensors: true).objectValue)
        XCTAssertEqual(full["tensors"]?.arrayValue?.count, 21)
        XCTAssertEqual(full["tensors"]?.arrayValue?.first?.objectValue?.keys, ["name", "dtype", "shape", "parameters", "bytes", "file"])
    }

    // MARK: - I/O primitives

    /// Writes larger than, equal to and smaller than the writer's buffer, mixed.
    func testSequentialWriterLargeAndSmallWrites() throws {
        let folder = TemporaryDirectory()
        let path = folder.file("big.bin")
        let writer = try FileSystem.createFile(path)
        var expected: [UInt8] = []
        var rng = SplitMix64(seed: 11)
        // One pool of random bytes (filled a word at a time: fast in debug builds), sliced at varying starts.
        var pool = [UInt8](repeating: 0, count: 7 << 20)
        pool.withUnsafeMutableBytes { raw in
            for i in 0..<(raw.count / 8) { raw.storeBytes(of: rng.next(), toByteOffset: i * 8, as: UInt64.self) }
        }
        for (i, size) in [3, 1 << 21, 5, (4 << 20) - 8, 7, 4 << 20, 1, (6 << 20) + 3, 0].enumerated() {
            let chunk = Array(pool[i..<(i + size)])
            try writer.write(chunk)
            expected += chunk
            XCTAssertEqual(writer.position, UInt64(expected.count))
        }
        try writer.writeZeros(70_000)
        expected += [UInt8](repeating: 0, count: 70_000)
        try writer.write("tail")
        expected += Array("tail".utf8)
        try writer.close()
        XCTAssertEqual(FileManager.default.contents(atPath: path), Data(expected))

        let file = try ReadableFile(path: path)
        XCTAssertEqual(file.size, UInt64(expected.count))
        XCTAssertEqual(try file.readBytes(at: 1 << 21, count: 100), Array(expected[(1 << 21)..<((1 << 21) + 100)]))
        XCTAssertEqual(try file.readBytes(at: 5, count: 0), [])
    }

    /// A file that shrinks after its header was validated is an I/O error on read, not a crash.
    func testFileTruncatedAfterOpeningIsAnIOError() throws {
        let folder = TemporaryDirectory()
        let path = folder.file("shrinks.safetensors")
        writeFile(path, CraftedInputs.validF32("w", [1, 2, 3, 4]))
        let checkpoint = try Checkpoint(path: path)
        XCTAssertEqual(truncate(path, 20), 0)
        XCTAssertThrowsError(try checkpoint.tensors[0].stored.allFloats()) { error in
            XCTAssertEqual((error as? QConvError)?.category, .io, "\(error)")
            XCTAssertTrue("\(error)".contains(path))
        }
        XCTAssertThrowsError(try Inspection.inspect(path: path, statistics: true, threads: 1))
    }

    func testReadingAFolderAsAFileIsAnIOError() {
        XCTAssertThrowsError(try ReadableFile(path: Fixtures.sample("sharded_llama"))) { error in
            XCTAssertEqual((error as? QConvError)?.category, .io)
        }
    }

    func testPathHelpers() {
        XCTAssertEqual(FileSystem.directoryName(of: "/a/b/c"), "/a/b")
        XCTAssertEqual(FileSystem.directoryName(of: "/a/b/"), "/a")
        XCTAssertEqual(FileSystem.directoryName(of: "/a"), "/")
        XCTAssertEqual(FileSystem.directoryName(of: "a"), ".")
        XCTAssertEqual(FileSystem.baseName(of: "/a/b/"), "b")
        XCTAssertEqual(FileSystem.baseName(of: "b"), "b")
        XCTAssertEqual(FileSystem.join("/a/", "b"), "/a/b")
        XCTAssertEqual(FileSystem.join("/a", "b"), "/a/b")
    }

    // MARK: - parallelFor

    func testParallelForVisitsEveryIndexOnce() throws {
        for threads in [1, 2, 7] {
            var hits = [Int](repeating: 0, count: 1000)
            try hits.withUnsafeMutableBufferPointer { slots in
                try parallelFor(slots.count, threads: threads) { i in slots[i] += 1 }
            }
            XCTAssertEqual(hits, [Int](repeating: 1, count: 1000), "threads \(threads)")
        }
        try parallelFor(0, threads: 4) { _ in XCTFail("no work expected") }
    }

    func testParallelForRethrows() {
        struct Stop: Error {}
        for threads in [1, 4] {
            XCTAssertThrowsError(try parallelFor(100, threads: threads) { i in if i == 37 { throw Stop() } }) { XCTAssertTrue($0 is Stop) }
        }
    }
}
