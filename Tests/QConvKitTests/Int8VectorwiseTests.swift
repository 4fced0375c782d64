import XCTest
import QConvKit
import QConvTestSupport

final class Int8VectorwiseTests: XCTestCase {

    // MARK: - bitsandbytes reference files

    func testMatchesBitsandbytesReferenceFiles() throws {
        let files = Fixtures.files(in: "quant", prefix: "int8_")
        XCTAssertEqual(files.count, 5, "the int8 reference files are missing")
        var filesWithOutliers = 0
        for path in files {
            let name = (path as NSString).lastPathComponent
            let reference = try Int8Reference(path: path)
            let criterion: OutlierCriterion = reference.threshold == 0 ? .none : .absolute(reference.threshold)
            let result = Quantized(reference.input, rows: reference.rows, columns: reference.columns, criterion: criterion)

            XCTAssertEqual(result.selection.columns, reference.outlierColumns, name)
            if !reference.outlierColumns.isEmpty { filesWithOutliers += 1 }
            XCTAssertEqual(result.rowScales.map(\.bitPattern), reference.scb.map(\.bitPattern), "\(name): SCB")

            // CB: a difference of one is only acceptable on a float32 .5 tie.
            for index in 0..<reference.cb.count where result.codes[index] != reference.cb[index] {
                let row = index / reference.columns
                let scaled = reference.input[index] * (127 * (1 / reference.scb[row]))
                let distanceToTie = abs(abs(scaled - scaled.rounded(.down)) - 0.5)
                XCTAssertEqual(abs(Int(result.codes[index]) - Int(reference.cb[index])), 1, "\(name): CB[\(index)]")
                XCTAssertLessThan(distanceToTie, 1e-5, "\(name): CB[\(index)] differs away from a tie (scaled \(scaled))")
            }

            let restored = result.dequantized()
            let outliers = Set(reference.outlierColumns)
            for index in 0..<restored.count {
                let column = index % reference.columns
                if outliers.contains(column) {
                    // bitsandbytes' int8 part is 0 there (CB is 0); the FP16 values come back.
                    XCTAssertEqual(reference.dequantInt8Part[index], 0, "\(name): reference int8 part at outlier column")
                    XCTAssertEqual(result.codes[index], 0, "\(name): CB at outlier column")
                    XCTAssertEqual(restored[index].bitPattern, reference.input[index].bitPattern, "\(name): outlier value [\(index)]")
                } else {
                    XCTAssertEqual(restored[index].bitPattern, reference.dequantInt8Part[index].bitPattern, "\(name): dequant [\(index)]")
                }
            }
        }
        XCTAssertEqual(filesWithOutliers, 4)
    }

    /// bitsandbytes leaves only the outlier elements (|a| >= T), not whole
    /// outlier columns, out of the row absmax; the reference files tell the two apart.
    func testReferenceRowScalesKeepNonOutlierElementsOfOutlierColumns() throws {
        let reference = try Int8Reference(path: Fixtures.path("quant/int8_outliers_thr6.safetensors"))
        var differing = 0
        for row in 0..<reference.rows {
            var wholeColumnMax: Float = 0
            for column in 0..<reference.columns where !reference.outlierColumns.contains(column) {
                wholeColumnMax = max(wholeColumnMax, abs(reference.input[row * reference.columns + column]))
            }
            if wholeColumnMax != reference.scb[row] { differing += 1 }
        }
        XCTAssertGreaterThan(differing, 0)
    }

    // MARK: - Hand-checked rows

    /// bitsandbytes 0.50.2 on [[0,0,0,0],[1,2,3,4],[0,7,0,0]] with threshold 6:
    /// CB [[0,0,0,0],[32,0,95,127],[0,0,0,0]], SCB [0,4,0], outlier columns [1].
    func testAllZeroRowAndRowOfOnlyAnOutlier() {
        let input: [Float] = [0, 0, 0, 0, 1, 2, 3, 4, 0, 7, 0, 0]
        let result = Quantized(input, rows: 3, columns: 4, criterion: .absolute(6))
        XCTAssertEqual(result.selection, OutlierSelection(threshold: 6, columns: [1]))
        XCTAssertEqual(result.codes, [0, 0, 0, 0, 32, 0, 95, 127, 0, 0, 0, 0])
        XCTAssertEqual(result.rowScales, [0, 4, 0])
        XCTAssertEqual(result.outlierValues.map { FloatConversion.float(fromHalf: $0) }, [0, 2, 7])
        let restored = result.dequantized()
        XCTAssertFalse(restored.contains { $0.isNaN })
        XCTAssertEqual(restored[0..<4], [0, 0, 0, 0])
        XCTAssertEqual(restored[8..<12], [0, 7, 0, 0])
    }

    func testPlainAllZeroRowGivesZeroCodesAndScale() {
        let result = Quantized([Float](repeating: 0, count: 19) + (1...19).map(Float.init), rows: 2, columns: 19, criterion: .none)
        XCTAssertEqual(result.rowScales, [0, 19])
        XCTAssertEqual(result.codes[0..<19], ArraySlice(repeating: 0, count: 19))
        XCTAssertEqual(result.dequantized()[0..<19], ArraySlice(repeating: 0, count: 19))
    }

    /// With absmax 254 the scale is exactly 0.5, so odd values land on ties,
    /// which go to the even neighbour (round-half-away would give 1, 2, 3).
    func testRoundsHalfToEven() {
        let row: [Float] = [1, 3, 5, -1, -3, -5, 254, 0, 7]
        let result = Quantized(row, rows: 1, columns: row.count, criterion: .none)
        XCTAssertEqual(result.codes, [0, 2, 2, 0, -2, -2, 127, 0, 4])
    }

    func testSingleRowKeepsOutliersAsHalves() {
        let row: [Float] = [1, 2, 8, -4, -6.5]
        let result = Quantized(row, rows: 1, columns: row.count, criterion: .absolute(6))
        XCTAssertEqual(result.selection.columns, [2, 4])
        XCTAssertEqual(result.rowScales, [4])
        // 2 * 31.75 = 63.5 rounds to the even 64.
        XCTAssertEqual(result.codes, [32, 64, 0, -127, 0])
        XCTAssertEqual(result.outlierValues, [FloatConversion.halfBits(from: 8), FloatConversion.halfBits(from: -6.5)])
        XCTAssertEqual(result.dequantized()[2], 8)
        XCTAssertEqual(result.dequantized()[4], -6.5)
    }

    func testRankOneTensorIsOneRow() throws {
        let reference = try Int8Reference(path: Fixtures.path("quant/int8_single_row.safetensors"))
        let shape = TensorInfo(name: "bias", dtype: .f16, shape: [reference.input.count]).matrixShape
        XCTAssertEqual(shape.rows, 1)
        let result = Quantized(reference.input, rows: shape.rows, columns: shape.columns, criterion: .absolute(reference.threshold))
        XCTAssertEqual(result.codes, reference.cb)
        XCTAssertEqual(result.rowScales, reference.scb)
    }

    /// bitsandbytes: a row holding inf gets SCB inf, one holding NaN SCB NaN; all codes 0.
    func testNonFiniteRowsGiveZeroCodes() {
        let input: [Float] = [1, .infinity, 2, 0, 1, .nan, 2, 0, 1, 2, 3, 4]
        let result = Quantized(input, rows: 3, columns: 4, criterion: .none)
        XCTAssertEqual(result.rowScales[0], .infinity)
        XCTAssertTrue(result.rowScales[1].isNaN)
        XCTAssertEqual(result.codes, [0, 0, 0, 0, 0, 0, 0, 0, 32, 64, 95, 127])
    }

    // MARK: - Chunks

    func testChunkedScanAndQuantizationEqualOneCall() {
        let rows = 37, columns = 53
        var input = randomHalfValues(count: rows * columns, scale: 0.02, seed: 7)
        input[5 * columns + 3] = 0.9
        input[30 * columns + 50] = -1.25
        input[36 * columns + 52] = 0.7

        let whole = Quantized(input, rows: rows, columns: columns, criterion: .default)
        XCTAssertEqual(whole.selection.columns, [3, 50, 52])

        let chunks = [0..<5, 5..<6, 6..<29, 29..<37]
        var merged = OutlierScan(columns: columns)
        for chunk in chunks {
            var scan = OutlierScan(columns: columns)
            input.withUnsafeBufferPointer { scan.add(UnsafeBufferPointer(rebasing: $0[chunk.lowerBound * columns..<chunk.upperBound * columns])) }
            merged.merge(scan)
        }
        XCTAssertEqual(merged.rowCount, rows)
        XCTAssertEqual(merged.columnAbsMax, whole.scan.columnAbsMax)
        XCTAssertEqual(merged.rms, whole.scan.rms, accuracy: 1e-12 * whole.scan.rms)
        XCTAssertEqual(merged.selection(.default), whole.selection)

        let outlierCount = whole.selection.columns.count
        var codes = [Int8](repeating: 0, count: rows * columns)
        var scales = [Float](repeating: 0, count: rows)
        var outlierValues = [UInt16](repeating: 0, count: rows * outlierCount)
        for chunk in chunks.reversed() {
            let elements = chunk.lowerBound * columns..<chunk.upperBound * columns
            input.withUnsafeBufferPointer { source in
                codes.withUnsafeMutableBufferPointer { codes in
                    scales.withUnsafeMutableBufferPointer { scales in
                        outlierValues.withUnsafeMutableBufferPointer { values in
                            Int8Vectorwise.quantize(rows: UnsafeBufferPointer(rebasing: source[elements]), rowCount: chunk.count, columns: columns,
                                                    selection: whole.selection,
                                                    codes: UnsafeMutableBufferPointer(rebasing: codes[elements]),
                                                    rowScales: UnsafeMutableBufferPointer(rebasing: scales[chunk]),
                                                    outlierValues: UnsafeMutableBufferPointer(rebasing: values[chunk.lowerBound * outlierCount..<chunk.upperBound * outlierCount]))
                        }
                    }
                }
            }
        }
        XCTAssertEqual(codes, whole.codes)
        XCTAssertEqual(scales, whole.rowScales)
        XCTAssertEqual(outlierValues, whole.outlierValues)
    }

    /// The fused pass 1 gives what a scan plus plain quantization give, for
    /// row lengths around the vector widths and rows with NaN, infinities,
    /// zeros and negative zeros.
    func testQuantizeScanningEqualsScanPlusPlainQuantization() {
        for columns in [1, 7, 8, 15, 16, 17, 33, 100] {
            let rows = 6
            var input = randomHalfValues(count: rows * columns, scale: 0.05, seed: UInt64(columns))
            input[columns / 2] = .nan
            input[columns + columns - 1] = -.infinity
            for c in 0..<columns { input[2 * columns + c] = c % 2 == 0 ? 0 : -0.0 }
            input[3 * columns] = 65504
            input[4 * columns + columns / 3] = .infinity
            input[4 * columns] = .nan
            let plain = Quantized(input, rows: rows, columns: columns, criterion: .none)
            var scan = OutlierScan(columns: columns)
            var codes = [Int8](repeating: 99, count: rows * columns)
            var scales = [Float](repeating: -1, count: rows)
            input.withUnsafeBufferPointer { source in
                codes.withUnsafeMutableBufferPointer { codes in
                    scales.withUnsafeMutableBufferPointer { scales in
                        Int8Vectorwise.quantizeScanning(rows: source, rowCount: rows, columns: columns, scan: &scan, codes: codes, rowScales: scales)
                    }
                }
            }
            XCTAssertEqual(codes, plain.codes, "\(columns) columns")
            XCTAssertEqual(scales.map(\.bitPattern), plain.rowScales.map(\.bitPattern), "\(columns) columns")
            XCTAssertEqual(scan, plain.scan, "\(columns) columns")
            // Against a plain loop: column maxima ignore NaN and keep
            // infinities, and the squares count the finite values only.
            var maxima = [Float](repeating: 0, count: columns)
            var squares = 0.0, finite = 0
            for (i, value) in input.enumerated() {
                if !value.isNaN { maxima[i % columns] = max(maxima[i % columns], abs(value)) }
                if value.isFinite { squares += Double(value) * Double(value); finite += 1 }
            }
            XCTAssertEqual(scan.columnAbsMax, maxima, "\(columns) columns")
            XCTAssertEqual(scan.finiteCount, finite, "\(columns) columns")
            XCTAssertEqual(scan.rms, (squares / Double(finite)).squareRoot(), accuracy: 1e-12 * scan.rms, "\(columns) columns")
        }
    }

    /// The row maxima behind SCB: NaN wins, elements at or above the
    /// threshold are left out (infinity too), and the threshold itself counts as above.
    func testRowScaleExcludesFromTheThresholdAndKeepsNaN() {
        func scale(_ row: [Float], _ criterion: OutlierCriterion) -> Float {
            Quantized(row, rows: 1, columns: row.count, criterion: criterion).rowScales[0]
        }
        let row: [Float] = [0.5, -3, 2, -0.0, 7, 1, -6, 2.5, 0.25, -1]  // longer than one vector
        XCTAssertEqual(scale(row, .none), 7)
        XCTAssertEqual(scale(row, .absolute(6)), 3)
        XCTAssertEqual(scale(row, .absolute(3)), 2.5)
        XCTAssertEqual(scale(row, .absolute(100)), 7)
        XCTAssertEqual(scale(row + [.infinity], .absolute(6)), 3)
        XCTAssertEqual(scale(row + [-.infinity], .none), .infinity)
        XCTAssertTrue(scale(row + [.nan], .absolute(6)).isNaN)
        // Rows long enough for the vectorized loop, with what matters in its
        // body (index 70) and in its tail (index 99).
        for at in [70, 99] {
            var long = [Float](repeating: 0.125, count: 100)
            long[at] = -4
            long[at - 1] = 9  // left out by abs:6
            XCTAssertEqual(scale(long, .none), 9, "at \(at)")
            XCTAssertEqual(scale(long, .absolute(6)), 4, "at \(at)")
            long[at - 2] = .nan
            XCTAssertTrue(scale(long, .absolute(6)).isNaN, "at \(at)")
        }
        XCTAssertTrue(scale([.nan], .none).isNaN)
        XCTAssertEqual(scale([-0.0, 0], .none).bitPattern, 0)
    }

    // MARK: - Criteria and scan

    func testCriterionThresholds() {
        XCTAssertEqual(OutlierCriterion.default, .relativeToRMS(10))
        XCTAssertNil(OutlierCriterion.none.threshold(rms: 1))
        XCTAssertNil(OutlierCriterion.absolute(0).threshold(rms: 1))
        XCTAssertEqual(OutlierCriterion.absolute(6).threshold(rms: 1), 6)
        // Rounded to float16 like torch's `half_tensor >= 0.06`.
        XCTAssertEqual(OutlierCriterion.absolute(0.06).threshold(rms: 1), 0.05999755859375)
        XCTAssertEqual(OutlierCriterion.absolute(6.001).threshold(rms: 1), 6)
        XCTAssertNil(OutlierCriterion.absolute(1e-9).threshold(rms: 1))
        XCTAssertEqual(OutlierCriterion.relativeToRMS(10).threshold(rms: 0.0625), 0.625)
        XCTAssertNil(OutlierCriterion.relativeToRMS(10).threshold(rms: 0))
        XCTAssertNil(OutlierCriterion.relativeToRMS(10).threshold(rms: .nan))
        for criterion in [OutlierCriterion.none, .absolute(6), .relativeToRMS(10), .relativeToRMS(2.5)] {
            XCTAssertEqual(OutlierCriterion(argument: criterion.description), criterion)
        }
        for bad in ["", "abs", "abs:", "abs:0", "rms:-1", "rms:nan", "rms:inf", "max:3", "6"] {
            XCTAssertNil(OutlierCriterion(argument: bad), bad)
        }
    }

    func testRelativeCriterionUsesTheTensorRMS() {
        // Every row's squares sum to 25: RMS = sqrt(100 / 16) = 2.5, and 1.7 x 2.5 = 4.25
        // leaves the 4s below the threshold and the 5 above it.
        let input: [Float] = [3, 4, 0, 0, 3, 0, 4, 0, 0, 0, 0, 5, 4, 3, 0, 0]
        let result = Quantized(input, rows: 4, columns: 4, criterion: .relativeToRMS(1.7))
        XCTAssertEqual(result.scan.rms, 2.5)
        XCTAssertEqual(result.selection, OutlierSelection(threshold: 4.25, columns: [3]))
        XCTAssertEqual(Quantized([Float](repeating: 0, count: 8), rows: 2, columns: 4, criterion: .default).selection, .none)
    }

    func testScanIgnoresNaNAndCountsInfinity() {
        var scan = OutlierScan(columns: 3)
        let rows: [Float] = [.nan, 1, -2, 7, .infinity, 2]
        rows.withUnsafeBufferPointer { scan.add($0) }
        XCTAssertEqual(scan.columnAbsMax, [7, .infinity, 2])
        XCTAssertEqual(scan.finiteCount, 4)
        XCTAssertEqual(scan.rms, ((1 + 4 + 49 + 4) / 4.0).squareRoot())
        XCTAssertEqual(scan.selection(.absolute(6)).columns, [0, 1])
    }

    // MARK: - Helpers

    /// Deterministic float16-valued floats, roughly normal with the given scale.
    private func randomHalfValues(count: Int, scale: Float, seed: UInt64) -> [Float] {
        var state = seed
        func uniform() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24)
        }
        return (0..<count).map { _ in
            let value = (uniform() + uniform() + uniform() + uniform() - 2) * scale * 1.7
            return FloatConversion.float(fromHalf: FloatConversion.halfBits(from: value))
        }
    }
}

/// One tensor run through both passes in single calls.
private struct Quantized {
    let rows: Int, columns: Int
    let scan: OutlierScan
    let selection: OutlierSelection
    var codes: [Int8]
    var rowScales: [Float]
    var outlierValues: [UInt16]

    init(_ input: [Float], rows: Int, columns: Int, criterion: OutlierCriterion) {
        self.rows = rows
        self.columns = columns
        var scan = OutlierScan(columns: columns)
        input.withUnsafeBufferPointer { scan.add($0) }
        self.scan = scan
        let selection = scan.selection(criterion)
        self.selection = selection
        codes = [Int8](repeating: 99, count: rows * columns)
        rowScales = [Float](repeating: -1, count: rows)
        outlierValues = [UInt16](repeating: 0xFFFF, count: rows * selection.columns.count)
        input.withUnsafeBufferPointer { source in
            codes.withUnsafeMutableBufferPointer { codes in
                rowScales.withUnsafeMutableBufferPointer { scales in
                    outlierValues.withUnsafeMutableBufferPointer { values in
                        Int8Vectorwise.quantize(rows: source, rowCount: rows, columns: columns, selection: selection,
                                                codes: codes, rowScales: scales, outlierValues: values)
                    }
                }
            }
        }
    }

    func dequantized() -> [Float] {
        var output = [Float](repeating: .nan, count: rows * columns)
        codes.withUnsafeBufferPointer { codes in
            rowScales.withUnsafeBufferPointer { scales in
                outlierValues.withUnsafeBufferPointer { values in
                    output.withUnsafeMutableBufferPointer { output in
                        Int8Vectorwise.dequantize(codes: codes, rowScales: scales, rowCount: rows, columns: columns,
                                                  outlierColumns: selection.columns, outlierValues: values, into: output)
                    }
                }
            }
        }
        return output
    }
}

/// An `int8_*` file written by bitsandbytes 0.50.2.
private struct Int8Reference {
    let threshold: Float
    let rows: Int, columns: Int
    let input: [Float]
    let cb: [Int8]
    let scb: [Float]
    let outlierColumns: [Int]
    let dequantInt8Part: [Float]

    init(path: String) throws {
        let file = try SafeTensorsFile(path: path)
        let metadata = Dictionary(uniqueKeysWithValues: (file.header.metadata ?? []).map { ($0.key, $0.value) })
        threshold = try XCTUnwrap(metadata["threshold"].flatMap(Float.init))
        func entry(_ name: String) throws -> SafeTensorsHeader.Entry { try XCTUnwrap(file.entry(named: name), "\(path): \(name)") }
        let inputEntry = try entry("input")
        XCTAssertEqual(inputEntry.info.dtype, .f16)
        (rows, columns) = inputEntry.info.matrixShape
        let halves = try file.bytes(of: inputEntry)
        var decoded = [Float](repeating: 0, count: halves.count / 2)
        halves.withUnsafeBytes { raw in
            decoded.withUnsafeMutableBufferPointer { FloatConversion.decode(raw.baseAddress!, dtype: .f16, count: $0.count, into: $0.baseAddress!) }
        }
        input = decoded
        cb = try file.bytes(of: entry("CB")).map { Int8(bitPattern: $0) }
        scb = try Self.values(file.bytes(of: entry("SCB")), as: Float.self)
        dequantInt8Part = try Self.values(file.bytes(of: entry("dequant_int8_part")), as: Float.self)
        outlierColumns = try file.entry(named: "outlier_cols").map { try Self.values(file.bytes(of: $0), as: Int64.self).map(Int.init) } ?? []
    }

    private static func values<T>(_ bytes: [UInt8], as type: T.Type) -> [T] {
        bytes.withUnsafeBytes { raw in
            (0..<raw.count / MemoryLayout<T>.size).map { raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self) }
        }
    }
}
