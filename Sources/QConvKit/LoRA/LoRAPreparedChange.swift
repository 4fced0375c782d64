/// One tensor's change with its adapter tensors decoded to float32, ready to
/// apply to the base values in float32 buffers (no file I/O).
///
/// The arithmetic is PEFT 0.21.2's `merge_and_unload()` on the CPU, step for
/// step in float32, so that rounding the result to the tensor's dtype once
/// gives PEFT's bytes:
/// - linear: `W + (B @ A) * s`, the product accumulated over r in order, `s`
///   rounded to float32 (torch multiplies by a Python float that way);
/// - embedding: the delta `(B @ A)^T * s` is rounded to W's dtype before the
///   add (PEFT's `Embedding.merge` calls `.to(orig_dtype)`, `Linear.merge`
///   does not);
/// - DoRA: `V = W + delta`, `W' = (m / ||V||) * V` with the norm per output
///   feature taken in double precision and rounded to float32;
/// - `lora_B.bias`: `bias + lora_B.bias * s`;
/// - replaced tensors (modules_to_save, `base_layer` tensors) are rounded to
///   the base dtype first, as loading them into the model does;
/// - several adapters: the factors of their combination (`LoRACombinedModule`)
///   take the place of the module's.
///
/// DoRA whose norms run across rows (fan_in_fan_out weights, embeddings)
/// merges in two passes over the rows: `accumulateColumnSquares` to get the
/// column norms, then `apply(to:rows:columnFactors:)`; or in one call on a
/// whole tensor with `applyToWholeTensor`. Both sum the squares in the same
/// order (`normBlockRows`), so they give the same bits.
public final class LoRAPreparedChange: @unchecked Sendable {
    public let change: LoRATensorChange
    private let scale: Float
    private let rank: Int
    /// Per output row, the r weights of the basis rows: `B` for linear,
    /// `A^T` for fan_in_fan_out and embeddings. rows x r.
    private let coefficients: [Float]
    /// r rows of the row length: `A` for linear, `B^T` otherwise.
    private let basis: [Float]
    /// `basis` laid out for `LoRAKernels.addDelta4` (`LoRAKernels.panels`);
    /// empty for DoRA, whose rows go one at a time.
    private let basisPanels: [Float]
    private let magnitude: [Float]
    private let biasDelta: [Float]
    /// The replacement's values rounded to the output dtype; empty when not decoded.
    private let replacement: [Float]
    /// Whether the replacement was decoded here; when it was not, the values
    /// given to `apply` already hold the replacement's rows, rounded to the
    /// output dtype (`MergedTensorSource` streams them).
    public let holdsReplacement: Bool
    /// The dtype the embedding delta is rounded through (F16/BF16 outputs).
    private let deltaRounding: DType?
    /// The products of the delta are summed with `FusedProducts` (PEFT's bits)
    /// rather than `SeparateProducts` (what merges of one adapter have always written).
    private let fused: Bool

    /// Rows of a linear change merged in one call of the kernel, which shares
    /// each load of the basis between them; reads of whole groups of them are
    /// the fastest. (The 512-bit kernel takes eight rows where a range has
    /// them; aligning reads to eight rows made the merge's chunks larger and
    /// its peak memory 30 MB higher for no gain in time.)
    public static let rowsPerKernelCall = 4

    /// Whether `apply(to:rows:)` cannot be used (DoRA with norms across rows);
    /// use the two passes or `applyToWholeTensor` then.
    public var requiresWholeTensor: Bool { change.requiresWholeTensor }
    public var rowCount: Int { change.rowCount }
    public var columnCount: Int { change.columnCount }

    /// Rows per block of the DoRA column norms: squares are summed over a
    /// block's rows in row order, then block by block in order, whatever the
    /// ranges the rows are read in and the number of threads.
    public var normBlockRows: Int { max(1, min(rowCount, (1 << 16) / max(1, columnCount))) }

    /// - Parameter decodeReplacement: decode a replacement tensor (whole) here;
    ///   pass false when the caller puts the replacement's rows, rounded to
    ///   the output dtype, into the values it gives `apply`.
    ///   - threads: the threads a combined change's factors are computed on.
    ///   - fusedProducts: sum the delta's products with one rounding per step,
    ///     as torch's CPU sgemm does (`FusedProducts`); combined changes always do.
    init(_ change: LoRATensorChange, decodeReplacement: Bool = true, threads: Int = 1, fusedProducts: Bool = false) throws {
        self.change = change
        fused = fusedProducts || change.combined != nil
        scale = Float(change.scale ?? 1)
        // Several adapters give one LoRA of their own rank (`LoRACombinedModule`).
        let combined = try change.combined?.factors(threads: threads)
        rank = combined?.rank ?? change.rank ?? 0
        // PEFT loads a replacement into the base's parameter, so it is rounded
        // to the base dtype before any delta is added to it.
        var replacement: [Float] = []
        if decodeReplacement, let stored = change.replacement {
            replacement = try stored.allFloats()
            replacement.withUnsafeMutableBufferPointer { FloatConversion.roundTrip($0.baseAddress!, count: $0.count, through: change.output.dtype) }
        }
        self.replacement = replacement
        holdsReplacement = decodeReplacement && change.replacement != nil
        var coefficients: [Float] = [], basis: [Float] = [], magnitude: [Float] = [], biasDelta: [Float] = []
        if let module = change.module {
            switch change.kind {
            case .linear:
                coefficients = try combined?.up ?? module.up.allFloats()
                basis = try combined?.down ?? module.down.allFloats()
            case .linearFanInFanOut, .embedding:
                coefficients = Self.transposed(try combined?.down ?? module.down.allFloats(), rows: rank)
                basis = Self.transposed(try combined?.up ?? module.up.allFloats(), columns: rank)
            case .bias:
                biasDelta = try module.upBias?.allFloats() ?? []
            case .replacement:
                break
            }
            if change.isDoRA { magnitude = try module.magnitude?.allFloats() ?? [] }
        }
        self.coefficients = coefficients
        self.basis = basis
        self.magnitude = magnitude
        self.biasDelta = biasDelta
        let dtype = change.output.dtype
        // PEFT rounds the delta to the dtype it is added in: an embedding's
        // (`.to(orig_dtype)`), and one made from 16-bit factors (`cat` on a 16-bit base).
        let roundsDelta = change.kind == .embedding || change.combined?.factorDType != nil
        deltaRounding = roundsDelta && !change.isDoRA && dtype != .f32 ? dtype : nil
        basisPanels = !basis.isEmpty && !change.isDoRA ? LoRAKernels.panels(basis, rank: rank, columns: change.columnCount) : []
    }

    /// Copies the decoded replacement's rows over `values`, if there is one.
    private func startValues(_ values: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        guard !replacement.isEmpty else { return }
        let columns = columnCount
        replacement.withUnsafeBufferPointer { source in
            values.update(from: source.baseAddress! + rows.lowerBound * columns, count: rows.count * columns)
        }
    }

    /// Merges rows `rows` of the tensor in place. `values` holds those rows
    /// (`rows.count * columnCount` floats): the base's values decoded to
    /// float32; for a replacement, anything when `holdsReplacement` (its
    /// values overwrite them), else the replacement's values rounded to the
    /// output dtype. Afterwards they are the merged values, to be rounded to
    /// `change.output.dtype` once. Different row ranges may run in parallel.
    public func apply(to values: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        precondition(!requiresWholeTensor, "\(change.base.name): DoRA norms across rows need the column factors")
        precondition(rows.lowerBound >= 0 && rows.upperBound <= rowCount, "rows outside \(change.base.name)")
        let columns = columnCount
        guard !rows.isEmpty && columns > 0 else { return }
        startValues(values, rows: rows)
        switch change.kind {
        case .replacement:
            break
        case .bias:
            biasDelta.withUnsafeBufferPointer { delta in
                LoRAKernels.addScaled(delta.baseAddress! + rows.lowerBound * columns, scale: scale, into: values, count: rows.count * columns)
            }
        case .linear, .linearFanInFanOut, .embedding:
            if fused {
                addDeltas(to: values, rows: rows, FusedProducts.self)
            } else {
                addDeltas(to: values, rows: rows, SeparateProducts.self)
            }
        }
    }

    /// The factors' delta added to rows `rows` (given as for `apply(to:rows:)`);
    /// rounded to `deltaRounding` first where PEFT rounds it, computed on
    /// its own for that.
    private func addDeltas<P: ProductAccumulation>(to values: UnsafeMutablePointer<Float>, rows: Range<Int>, _ products: P.Type) {
        let count = rows.count * columnCount
        if change.isDoRA {
            addDoRADeltas(to: values, rows: rows)
        } else if let dtype = deltaRounding {
            let delta = UnsafeMutablePointer<Float>.allocate(capacity: count)
            defer { delta.deallocate() }
            delta.initialize(repeating: 0, count: count)
            addPlainDeltas(to: delta, rows: rows, P.self)
            FloatConversion.add(delta, roundedThrough: dtype, to: values, count: count)
        } else {
            addPlainDeltas(to: values, rows: rows, P.self)
        }
    }

    /// The factors' delta added to rows `rows`: eight or four rows at a time, sharing
    /// each load of the basis, then one at a time (the same bits).
    private func addPlainDeltas<P: ProductAccumulation>(to values: UnsafeMutablePointer<Float>, rows: Range<Int>, _ products: P.Type) {
        let columns = columnCount
        withFactors { coefficients, basis in
            var row = rows.lowerBound
            basisPanels.withUnsafeBufferPointer { panels in
                if LoRAKernels.hasEightRowKernel {
                    let kernel = P.eightRows
                    while row + 8 <= rows.upperBound {
                        kernel(coefficients + row * rank, basis, panels.baseAddress!, rank, columns, scale, values + (row - rows.lowerBound) * columns)
                        row += 8
                    }
                }
                while row + Self.rowsPerKernelCall <= rows.upperBound {
                    LoRAKernels.addDelta4(coefficients + row * rank, basis, panels: panels.baseAddress!, rank: rank, columns: columns,
                                          scale: scale, into: values + (row - rows.lowerBound) * columns, P.self)
                    row += Self.rowsPerKernelCall
                }
            }
            for row in row..<rows.upperBound {
                LoRAKernels.addDelta(coefficients + row * rank, basis, rank: rank, columns: columns, scale: scale,
                                     into: values + (row - rows.lowerBound) * columns, P.self)
            }
        }
    }

    /// DoRA along rows: each row merged, then rescaled to its magnitude.
    private func addDoRADeltas(to values: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        let columns = columnCount
        withFactors { coefficients, basis in
            for row in rows {
                let target = values + (row - rows.lowerBound) * columns
                let norm = LoRAKernels.addDeltaReturningNorm(coefficients + row * rank, basis, rank: rank, columns: columns, scale: scale, into: target)
                LoRAKernels.multiply(target, count: columns, by: magnitude[row] / norm)
            }
        }
    }

    /// DoRA across rows, first pass: turns rows `rows` of `values` (given as
    /// for `apply(to:rows:)`) into `V = W + delta` in place and adds each
    /// column's squares over these rows, in row order, in double precision,
    /// to `squares` (`columnCount` values). Call it once per block of
    /// `normBlockRows` rows (the last one may be shorter), each block's sums
    /// starting at zero, and add the blocks' sums in block order.
    public func accumulateColumnSquares(_ values: UnsafeMutablePointer<Float>, rows: Range<Int>, into squares: UnsafeMutablePointer<Double>) {
        precondition(requiresWholeTensor, "\(change.base.name): only DoRA with norms across rows has column norms")
        precondition(rows.lowerBound >= 0 && rows.upperBound <= rowCount, "rows outside \(change.base.name)")
        forEachMergedRow(values, rows: rows) { LoRAKernels.accumulateSquares($0, count: columnCount, into: squares) }
    }

    /// DoRA across rows: each column's factor `m / ||V column||`, from the
    /// summed squares of the first pass (`columnCount` values).
    public func columnFactors(squares: UnsafePointer<Double>) -> [Float] {
        (0..<columnCount).map { magnitude[$0] / Float(squares[$0].squareRoot()) }
    }

    /// DoRA across rows, second pass: merges rows `rows` in place (given as
    /// for `apply(to:rows:)`), `V` times each column's factor.
    public func apply(to values: UnsafeMutablePointer<Float>, rows: Range<Int>, columnFactors factors: UnsafePointer<Float>) {
        precondition(requiresWholeTensor, "\(change.base.name): only DoRA with norms across rows has column factors")
        precondition(rows.lowerBound >= 0 && rows.upperBound <= rowCount, "rows outside \(change.base.name)")
        forEachMergedRow(values, rows: rows) { LoRAKernels.multiply($0, by: factors, count: columnCount) }
    }

    /// Both DoRA passes across rows: turns each row of `values` into
    /// `V = W + delta` in place, then hands it to `body`.
    private func forEachMergedRow(_ values: UnsafeMutablePointer<Float>, rows: Range<Int>, _ body: (UnsafeMutablePointer<Float>) -> Void) {
        let columns = columnCount
        guard !rows.isEmpty && columns > 0 else { return }
        startValues(values, rows: rows)
        withFactors { coefficients, basis in
            for row in rows {
                let target = values + (row - rows.lowerBound) * columns
                LoRAKernels.addDelta(coefficients + row * rank, basis, rank: rank, columns: columns, scale: scale, into: target)
                body(target)
            }
        }
    }

    /// Merges the whole tensor in place (`rowCount * columnCount` floats),
    /// using up to `threads` threads. Works for every change.
    public func applyToWholeTensor(_ values: UnsafeMutablePointer<Float>, threads: Int) throws {
        let rows = rowCount, columns = columnCount
        guard rows > 0 && columns > 0 else { return }
        let chunkRows = normBlockRows
        let chunks = (rows + chunkRows - 1) / chunkRows
        func range(_ chunk: Int) -> Range<Int> { chunk * chunkRows ..< min(rows, (chunk + 1) * chunkRows) }
        guard requiresWholeTensor else {
            try parallelFor(chunks, threads: threads) { chunk in
                let rows = range(chunk)
                apply(to: values + rows.lowerBound * columns, rows: rows)
            }
            return
        }
        // Column norms: V everywhere, squares summed per block, then every
        // column rescaled by magnitude / norm.
        let sums = UnsafeMutableBufferPointer<Double>.allocate(capacity: chunks * columns)
        sums.initialize(repeating: 0)
        defer { sums.deallocate() }
        try parallelFor(chunks, threads: threads) { chunk in
            let rows = range(chunk)
            accumulateColumnSquares(values + rows.lowerBound * columns, rows: rows, into: sums.baseAddress! + chunk * columns)
        }
        var total = [Double](repeating: 0, count: columns)
        for chunk in 0..<chunks { for column in 0..<columns { total[column] += sums[chunk * columns + column] } }
        let factors = total.withUnsafeBufferPointer { columnFactors(squares: $0.baseAddress!) }
        try factors.withUnsafeBufferPointer { factors in
            try parallelFor(chunks, threads: threads) { chunk in
                for row in range(chunk) {
                    LoRAKernels.multiply(values + row * columns, by: factors.baseAddress!, count: columns)
                }
            }
        }
    }

    private func withFactors<R>(_ body: (UnsafePointer<Float>, UnsafePointer<Float>) throws -> R) rethrows -> R {
        try coefficients.withUnsafeBufferPointer { c in
            try basis.withUnsafeBufferPointer { b in try body(c.baseAddress!, b.baseAddress!) }
        }
    }

    /// `[rows, n]` -> `[n, rows]`.
    static func transposed(_ values: [Float], rows: Int) -> [Float] {
        guard rows > 0 else { return [] }
        let columns = values.count / rows
        var result = [Float](repeating: 0, count: values.count)
        for r in 0..<rows { for c in 0..<columns { result[c * rows + r] = values[r * columns + c] } }
        return result
    }

    /// `[n, columns]` -> `[columns, n]`.
    static func transposed(_ values: [Float], columns: Int) -> [Float] {
        guard columns > 0 else { return [] }
        return transposed(values, rows: values.count / columns)
    }
}
