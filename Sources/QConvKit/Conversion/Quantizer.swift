/// `to-nf4`, `to-fp4`, `to-int8`: a safetensors checkpoint to a qconv container,
/// streamed tensor by tensor, chunk by chunk, on all cores.
///
/// Memory stays at a few chunk buffers plus the per-tensor side data (4-bit
/// absmax values, int8 row scales and outlier values), never a whole model.
public enum Quantizer {
    /// Elements per chunk: a multiple of every supported block size.
    static let chunkElements = 1 << 20
    /// Elements decoded and quantized at once: 64 KB of floats, well inside a core's L2 cache.
    static let tileElements = 1 << 14

    /// Converts `source` into a container at `destination`.
    public static func convert(_ source: Checkpoint, to destination: String, options: QuantizationOptions) throws -> ConversionReport {
        let started = monotonicSeconds()
        let plan = source.tensors.map { tensor -> (tensor: Checkpoint.Tensor, scheme: ContainerScheme, parameters: SchemeParameters) in
            guard options.selection.shouldQuantize(tensor.info) else { return (tensor, .raw, .raw) }
            switch options.method {
            case let .fourBit(_, blockSize, doubleQuant):
                return (tensor, options.method.scheme, .fourBit(blockSize: blockSize, offset: doubleQuant ? 0 : nil))
            case let .int8(outliers):
                return (tensor, .int8, .int8(outlierColumnCount: 0, rule: outliers.description, threshold: 0))
            }
        }
        let embedded = source.auxiliaryFiles.map { name -> (path: String, part: ContainerPart) in
            let path = FileSystem.join(source.path, name)
            let size = Int(FileSystem.size(of: path) ?? 0)
            return (path, ContainerPart(name: name, dtype: .u8, shape: [size]))
        }
        let provenance: JSONObject = JSONObject([
            ("qconv_version", .string(QConvVersion.string)),
            ("options", options.json),
            ("source", .object([
                "path": .string(source.path), "layout": .string(source.layout.rawValue),
                "files": .array(source.shards.map { .string(FileSystem.baseName(of: $0.path)) }),
                "tensor_bytes": .uint(source.tensors.reduce(0) { $0 + UInt64($1.info.byteCount) }),
            ])),
        ])
        let upperBound = ContainerHeader.worstCase(
            tensors: plan.map { ($0.tensor.info, $0.scheme, $0.parameters) }, files: embedded.map(\.part),
            metadata: source.metadata, provenance: provenance)
        // Exact for raw and 4-bit tensors; int8 tensors counted without outlier columns.
        let expectedData = plan.reduce(UInt64(0)) { total, entry in
            var parameters = entry.parameters
            if case .fourBit(let blockSize, .some) = parameters { parameters = .fourBit(blockSize: blockSize, offset: 0) }
            let parts = ContainerLayout.parts(for: entry.tensor.info, scheme: entry.scheme, parameters: parameters)
            return total + parts.reduce(0) { $0 + ContainerFormat.aligned($1.expectedLength) }
        } + embedded.reduce(0) { $0 + ContainerFormat.aligned($1.part.expectedLength) }
        let writer = try ContainerWriter(destination: destination, overwrite: options.overwrite, inputs: source.filePaths,
                                         headerUpperBound: upperBound, expectedDataLength: expectedData)
        let totalBytes = source.tensors.reduce(UInt64(0)) { $0 + UInt64($1.info.byteCount) }
        let progress = Progress(label: options.method.commandName, total: totalBytes, quiet: options.quiet)
        defer { progress.finish() }

        var report = ConversionReport(input: source.path, output: destination, method: options.method)
        report.sourceBytes = source.shards.reduce(0) { $0 + $1.file.size }
        do {
            let buffers = makeBuffers(threads: options.threads)
            var files: [ContainerPart] = []
            for file in embedded {
                files.append(try writer.copyPart(file.part, from: ReadableFile(path: file.path), at: 0, buffers: buffers, threads: options.threads))
                report.embeddedFiles.append(file.part.name)
            }
            var entries: [ContainerHeader.Tensor] = []
            for (tensor, scheme, _) in plan {
                let entry: ContainerHeader.Tensor
                switch (scheme, options.method) {
                case (.raw, _):
                    let part = try writer.copyPart(ContainerPart(name: "data", dtype: tensor.info.dtype, shape: tensor.info.shape),
                                                   from: tensor.stored.file, at: tensor.stored.offset, buffers: buffers, threads: options.threads)
                    entry = ContainerHeader.Tensor(info: tensor.info, scheme: .raw, parameters: .raw, parts: [part])
                case (_, let method):
                    entry = try quantize(tensor.stored, file: tensor.stored.file.path, method: method, writer: writer,
                                         buffers: buffers, threads: options.threads, allowNonfinite: options.allowNonfinite)
                }
                entries.append(entry)
                var reported = ConversionReport.Tensor(
                    info: tensor.info, scheme: entry.scheme, storedBytes: entry.storedBytes,
                    outlierColumns: entry.scheme == .int8 ? entry.part("outlier_columns")?.shape.first : nil)
                if case let .int8(_, _, threshold) = entry.parameters { reported.outlierThreshold = threshold }
                report.tensors.append(reported)
                progress.advance(by: UInt64(tensor.info.byteCount), item: tensor.name)
            }
            let header = ContainerHeader(metadata: source.metadata, files: files, tensors: entries, provenance: provenance)
            try writer.finish(header: header)
        } catch {
            writer.discard()
            throw error
        }
        report.outputBytes = FileSystem.size(of: destination) ?? 0
        report.seconds = monotonicSeconds() - started
        return report
    }

    /// Quantizes one tensor into the open container, streaming `source` chunk by chunk.
    ///
    /// - Parameter file: the file `source` comes from, for error messages.
    public static func quantize(_ source: FloatTensorSource, file: String, method: QuantizationMethod, writer: ContainerWriter,
                                buffers: ChunkBuffers, threads: Int, allowNonfinite: Bool) throws -> ContainerHeader.Tensor {
        switch method {
        case let .fourBit(format, blockSize, doubleQuant):
            return try quantizeFourBit(source, file: file, format: format, blockSize: blockSize, doubleQuant: doubleQuant,
                                       writer: writer, buffers: buffers, threads: threads, allowNonfinite: allowNonfinite)
        case let .int8(outliers):
            return try quantizeInt8(source, file: file, outliers: outliers, writer: writer, buffers: buffers,
                                    threads: threads, allowNonfinite: allowNonfinite)
        }
    }

    /// Buffers for `quantize`: a few chunks per thread.
    public static func makeBuffers(threads: Int) -> ChunkBuffers {
        ChunkBuffers(slots: max(2, threads * 2), floats: chunkElements, bytes: chunkElements, scratch: chunkElements * 8)
    }

    // MARK: - 4-bit

    static func quantizeFourBit(_ tensor: FloatTensorSource, file: String, format: FourBitFormat, blockSize: Int, doubleQuant: Bool,
                                writer: ContainerWriter, buffers sharedBuffers: ChunkBuffers, threads: Int, allowNonfinite: Bool) throws -> ContainerHeader.Tensor {
        let info = tensor.info
        let n = info.elementCount
        // Chunks hold whole blocks and start where the source can start reading.
        let unit = leastCommonMultiple(blockSize, tensor.alignment)
        let chunk = max(unit, sharedBuffers.floatCapacity / unit * unit)
        let buffers = chunk <= sharedBuffers.floatCapacity ? sharedBuffers
            : ChunkBuffers(slots: sharedBuffers.slots, floats: chunk, bytes: chunk, scratch: chunk * 8)
        let chunkCount = (n + chunk - 1) / chunk
        // Within a chunk, values are decoded and quantized a tile at a time so
        // that they are still in the core's cache when the kernel reads them.
        let tile = max(unit, tileElements / unit * unit)
        var absmax = [Float](repeating: 0, count: (n + blockSize - 1) / blockSize)
        var firstBad = [(index: Int, value: Float)?](repeating: nil, count: buffers.slots)
        var layout = ContainerLayout.parts(for: info, scheme: format.scheme,
                                           parameters: .fourBit(blockSize: blockSize, offset: doubleQuant ? 0 : nil))
        try writer.beginPart(layout[0])
        let codes = try writer.reserve(UInt64(Blockwise4Bit.packedByteCount(elementCount: n)))
        try absmax.withUnsafeMutableBufferPointer { absmax in
            try firstBad.withUnsafeMutableBufferPointer { firstBad in
                try processChunksInBatches(chunkCount: chunkCount, slots: buffers.slots, threads: threads, compute: { c, slot in
                    let range = c * chunk..<min(n, (c + 1) * chunk)
                    let floats = buffers.floats(slot).baseAddress!
                    let packed = buffers.bytes(slot).baseAddress!.assumingMemoryBound(to: UInt8.self)
                    firstBad[slot] = nil
                    for start in stride(from: range.lowerBound, to: range.upperBound, by: tile) {
                        let count = min(tile, range.upperBound - start)
                        try tensor.readFloats(start..<start + count, into: floats, scratch: buffers.scratch(slot))
                        let scales = absmax.baseAddress! + start / blockSize
                        Blockwise4Bit.quantize(floats, count: count, blockSize: blockSize, format: format,
                                               packed: packed + (start - range.lowerBound) / 2, absmax: scales)
                        // A NaN or infinity makes its block's absmax non-finite: only then look for it.
                        if !allowNonfinite, !FiniteChecks.allFinite(UnsafeBufferPointer(start: scales, count: (count + blockSize - 1) / blockSize)),
                           let bad = FiniteChecks.firstNonFinite(UnsafeBufferPointer(start: floats, count: count)) {
                            firstBad[slot] = (start + bad, floats[bad])
                            return
                        }
                    }
                    try codes.write(UnsafeRawBufferPointer(rebasing: buffers.bytes(slot)[0..<(range.count + 1) / 2]), at: range.lowerBound / 2)
                }, emit: { c, slot in
                    let range = c * chunk..<min(n, (c + 1) * chunk)
                    if let bad = firstBad[slot] { throw nonFinite(info.name, file: file, index: bad.index, bad.value) }
                    writer.hash(UnsafeRawBufferPointer(rebasing: buffers.bytes(slot)[0..<(range.count + 1) / 2]))
                })
            }
        }
        layout[0] = try writer.endPart()
        var offset: Float?
        if doubleQuant {
            let nested = absmax.withUnsafeBufferPointer { DoubleQuantization.quantize(absmax: $0) }
            offset = nested.offset
            layout[1] = try nested.codes.withUnsafeBytes { try writer.writePart(layout[1], bytes: $0) }
            layout[2] = try nested.nestedAbsmax.withUnsafeBytes { try writer.writePart(layout[2], bytes: $0) }
        } else {
            layout[1] = try absmax.withUnsafeBytes { try writer.writePart(layout[1], bytes: $0) }
        }
        return ContainerHeader.Tensor(info: info, scheme: format.scheme,
                                      parameters: .fourBit(blockSize: blockSize, offset: offset), parts: layout)
    }

    // MARK: - int8

    static func quantizeInt8(_ tensor: FloatTensorSource, file: String, outliers: OutlierCriterion, writer: ContainerWriter,
                             buffers sharedBuffers: ChunkBuffers, threads: Int, allowNonfinite: Bool) throws -> ContainerHeader.Tensor {
        let info = tensor.info
        let (rows, columns) = info.matrixShape
        // Chunks hold whole rows, in a number the source can start reading at.
        let rowUnit = tensor.alignment / greatestCommonDivisor(tensor.alignment, max(columns, 1))
        let rowsPerChunk = max(rowUnit, sharedBuffers.floatCapacity / max(columns, 1) / rowUnit * rowUnit)
        let chunkElements = rowsPerChunk * columns
        // A row (or row unit) longer than a chunk gets buffers of its own.
        let buffers = chunkElements <= sharedBuffers.floatCapacity ? sharedBuffers
            : ChunkBuffers(slots: sharedBuffers.slots, floats: chunkElements, bytes: chunkElements, scratch: chunkElements * 8)
        let chunkCount = (rows + rowsPerChunk - 1) / rowsPerChunk
        func rowRange(_ c: Int) -> Range<Int> { c * rowsPerChunk..<min(rows, (c + 1) * rowsPerChunk) }
        // Within a chunk, rows are decoded and used a tile at a time, while
        // they are still in the core's cache.
        let rowsPerTile = max(rowUnit, tileElements / max(columns, 1) / rowUnit * rowUnit)
        func tiles(of chunk: Range<Int>) -> [Range<Int>] {
            stride(from: chunk.lowerBound, to: chunk.upperBound, by: rowsPerTile).map { $0..<min(chunk.upperBound, $0 + rowsPerTile) }
        }

        /// Reads the rows of a tile as bitsandbytes sees them, float16 values,
        /// to the start of the slot's float buffer, which stays in the core's
        /// cache from tile to tile.
        func readRows(_ tile: Range<Int>, slot: Int) throws {
            let floats = buffers.floats(slot).baseAddress!
            try tensor.readFloats(tile.lowerBound * columns..<tile.upperBound * columns, into: floats, scratch: buffers.scratch(slot))
            if info.dtype != .f16 { FloatConversion.roundTrip(floats, count: tile.count * columns, through: .f16) }
        }

        var rowScales = [Float](repeating: 0, count: rows)
        var firstBad = [Int?](repeating: nil, count: buffers.slots)

        /// The slot's buffers for the rows of `tile`, within the chunk starting
        /// at row `chunkStart`: the values `readRows` read, and the tile's
        /// place in the chunk's codes.
        func tileBuffers(_ tile: Range<Int>, chunkStart: Int, slot: Int) -> (values: UnsafeBufferPointer<Float>, codes: UnsafeMutableBufferPointer<Int8>) {
            let count = tile.count * columns
            let codes = buffers.bytes(slot).baseAddress!.assumingMemoryBound(to: Int8.self) + (tile.lowerBound - chunkStart) * columns
            return (UnsafeBufferPointer(start: buffers.floats(slot).baseAddress!, count: count), UnsafeMutableBufferPointer(start: codes, count: count))
        }

        /// The chunk-relative index of a NaN or infinity in the rows of
        /// `tile` quantized without outlier columns, when it must be refused:
        /// then no element is left out of a row's absmax, so it shows in the
        /// row's scale.
        func refusedNonFinite(_ tile: Range<Int>, chunkStart: Int, slot: Int, rowScales: UnsafeMutableBufferPointer<Float>) -> Int? {
            guard !allowNonfinite, !FiniteChecks.allFinite(UnsafeBufferPointer(rebasing: UnsafeBufferPointer(rowScales)[tile])) else { return nil }
            let values = tileBuffers(tile, chunkStart: chunkStart, slot: slot).values
            return FiniteChecks.firstNonFinite(values).map { (tile.lowerBound - chunkStart) * columns + $0 }
        }

        /// Quantizes the rows of `tile` from the values `readRows` left in the
        /// slot's buffer; returns what `refusedNonFinite` finds when there are
        /// no outlier columns.
        func quantizeTile(_ tile: Range<Int>, chunkStart: Int, slot: Int, selection: OutlierSelection,
                          rowScales: UnsafeMutableBufferPointer<Float>, outlierValues: UnsafeMutableBufferPointer<UInt16>) -> Int? {
            let (values, codes) = tileBuffers(tile, chunkStart: chunkStart, slot: slot)
            let k = selection.columns.count
            Int8Vectorwise.quantize(rows: values, rowCount: tile.count, columns: columns, selection: selection, codes: codes,
                                    rowScales: UnsafeMutableBufferPointer(rebasing: rowScales[tile]),
                                    outlierValues: UnsafeMutableBufferPointer(rebasing: outlierValues[tile.lowerBound * k..<tile.upperBound * k]))
            return selection == .none ? refusedNonFinite(tile, chunkStart: chunkStart, slot: slot, rowScales: rowScales) : nil
        }

        /// The chunk's codes, as the slot holds them.
        func chunkCodes(_ c: Int, slot: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: buffers.bytes(slot)[0..<rowRange(c).count * columns])
        }

        /// Hashes a written chunk's codes, or throws for its non-finite value
        /// (`bad`, chunk-relative).
        func emitCodes(_ c: Int, slot: Int, bad: Int?) throws {
            if let bad {
                throw try int8NonFinite(tensor, file: file, rows: rowRange(c), bad: bad, buffers: buffers, slot: slot)
            }
            writer.hash(chunkCodes(c, slot: slot))
        }

        // The codes part is the same whatever the outlier columns.
        try writer.beginPart(ContainerLayout.parts(for: info, scheme: .int8, parameters: .int8(outlierColumnCount: 0, rule: outliers.description, threshold: nil))[0])
        let codes = try writer.reserve(UInt64(rows * columns))
        var selection = OutlierSelection.none
        if outliers != .none {
            // Pass 1 scans every row for the outlier columns, which are known
            // only at the end. Meanwhile it quantizes and writes the rows as if
            // there were none, which is the final result for the many tensors
            // where the rule selects no column; otherwise pass 2 writes the
            // codes part again. Either way a NaN or infinity is found here: it
            // makes its row's scale non-finite.
            var total = OutlierScan(columns: columns)
            var scans = [OutlierScan](repeating: OutlierScan(columns: columns), count: buffers.slots)
            try scans.withUnsafeMutableBufferPointer { scans in
                try rowScales.withUnsafeMutableBufferPointer { rowScales in
                    try firstBad.withUnsafeMutableBufferPointer { firstBad in
                        try processChunksInBatches(chunkCount: chunkCount, slots: buffers.slots, threads: threads, compute: { c, slot in
                            let range = rowRange(c)
                            scans[slot] = OutlierScan(columns: columns)
                            firstBad[slot] = nil
                            for tile in tiles(of: range) {
                                try readRows(tile, slot: slot)
                                let (values, codes) = tileBuffers(tile, chunkStart: range.lowerBound, slot: slot)
                                Int8Vectorwise.quantizeScanning(rows: values, rowCount: tile.count, columns: columns, scan: &scans[slot],
                                                                codes: codes, rowScales: UnsafeMutableBufferPointer(rebasing: rowScales[tile]))
                                if firstBad[slot] == nil {
                                    firstBad[slot] = refusedNonFinite(tile, chunkStart: range.lowerBound, slot: slot, rowScales: rowScales)
                                }
                            }
                            if firstBad[slot] == nil { try codes.write(chunkCodes(c, slot: slot), at: range.lowerBound * columns) }
                        }, emit: { c, slot in
                            total.merge(scans[slot])
                            try emitCodes(c, slot: slot, bad: firstBad[slot])
                        })
                    }
                }
            }
            selection = total.selection(outliers)
            if selection != .none { writer.restartChecksum() }
        }
        let outlierColumns = selection.columns
        let k = outlierColumns.count
        // One spare element, so that buffer pointers into it always have a base address.
        var outlierValues = [UInt16](repeating: 0, count: rows * k + 1)
        if outliers == .none || selection != .none {
            try rowScales.withUnsafeMutableBufferPointer { rowScales in
                try outlierValues.withUnsafeMutableBufferPointer { outlierValues in
                    try firstBad.withUnsafeMutableBufferPointer { firstBad in
                        try processChunksInBatches(chunkCount: chunkCount, slots: buffers.slots, threads: threads, compute: { c, slot in
                            let range = rowRange(c)
                            firstBad[slot] = nil
                            for tile in tiles(of: range) {
                                try readRows(tile, slot: slot)
                                firstBad[slot] = quantizeTile(tile, chunkStart: range.lowerBound, slot: slot, selection: selection,
                                                              rowScales: rowScales, outlierValues: outlierValues)
                                if firstBad[slot] != nil { return }
                            }
                            try codes.write(chunkCodes(c, slot: slot), at: range.lowerBound * columns)
                        }, emit: { c, slot in
                            try emitCodes(c, slot: slot, bad: firstBad[slot])
                        })
                    }
                }
            }
        }
        let parameters = SchemeParameters.int8(outlierColumnCount: k, rule: outliers.description,
                                               threshold: k > 0 ? Double(selection.threshold) : nil)
        var layout = ContainerLayout.parts(for: info, scheme: .int8, parameters: parameters)
        layout[0] = try writer.endPart()
        layout[1] = try rowScales.withUnsafeBytes { try writer.writePart(layout[1], bytes: $0) }
        let columnIndices = outlierColumns.map { Int32($0).littleEndian }
        layout[2] = try columnIndices.withUnsafeBytes { try writer.writePart(layout[2], bytes: $0) }
        layout[3] = try outlierValues.withUnsafeBytes { try writer.writePart(layout[3], bytes: UnsafeRawBufferPointer(rebasing: $0[0..<rows * k * 2])) }
        return ContainerHeader.Tensor(info: info, scheme: .int8, parameters: parameters, parts: layout)
    }

    // MARK: - Helpers

    static func nonFinite(_ tensor: String, file: String, index: Int, _ value: Float) -> ConversionError {
        .nonFiniteValue(file: file, tensor: tensor, index: index, value: value.isNaN ? "NaN" : "\(value)")
    }

    /// The error for element `bad` of `rows` (chunk-relative), found
    /// non-finite after rounding to float16: the chunk's rows are read again
    /// without the rounding into the slot's buffer (the chunk is not written,
    /// so it is free), and a finite source value is reported as overflowing
    /// float16 rather than as the infinity it became.
    static func int8NonFinite(_ tensor: FloatTensorSource, file: String, rows: Range<Int>, bad: Int,
                              buffers: ChunkBuffers, slot: Int) throws -> ConversionError {
        let columns = tensor.info.matrixShape.columns
        let index = rows.lowerBound * columns + bad
        let floats = buffers.floats(slot).baseAddress!
        try tensor.readFloats(rows.lowerBound * columns..<rows.upperBound * columns, into: floats, scratch: buffers.scratch(slot))
        if tensor.info.dtype != .f16, floats[bad].isFinite {
            return .float16Overflow(file: file, tensor: tensor.info.name, index: index, value: "\(floats[bad])")
        }
        return nonFinite(tensor.info.name, file: file, index: index, floats[bad])
    }
}
