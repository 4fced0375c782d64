/// Limits a round trip must stay within; nil means "not checked".
public struct VerificationThresholds: Sendable {
    /// Largest relative RMSE allowed.
    public var maxRelativeRMSE: Double?
    /// Smallest SQNR in dB allowed.
    public var minSQNR: Double?
    /// Largest absolute error allowed.
    public var maxAbsoluteError: Double?
    /// Smallest cosine similarity allowed.
    public var minCosine: Double?

    /// Thresholds; each nil one is not checked.
    public init(maxRelativeRMSE: Double? = nil, minSQNR: Double? = nil, maxAbsoluteError: Double? = nil, minCosine: Double? = nil) {
        self.maxRelativeRMSE = maxRelativeRMSE
        self.minSQNR = minSQNR
        self.maxAbsoluteError = maxAbsoluteError
        self.minCosine = minCosine
    }

    /// The thresholds `metrics` breaks, as "name value limit" descriptions.
    /// A NaN metric breaks any threshold on it.
    public func violations(of metrics: ErrorMetrics) -> [String] {
        var broken: [String] = []
        if let limit = maxRelativeRMSE, !(metrics.relativeRMSE <= limit) { broken.append("rel_rmse \(metrics.relativeRMSE) > \(limit)") }
        if let limit = minSQNR, !(metrics.sqnrDecibels >= limit) { broken.append("sqnr_db \(metrics.sqnrDecibels) < \(limit)") }
        if let limit = maxAbsoluteError, !(metrics.maxAbsoluteError <= limit) { broken.append("max_abs_err \(metrics.maxAbsoluteError) > \(limit)") }
        if let limit = minCosine, !(metrics.cosineSimilarity >= limit) { broken.append("cosine \(metrics.cosineSimilarity) < \(limit)") }
        return broken
    }

    /// `{"max_rel_rmse", "min_sqnr_db", "max_abs_err", "min_cosine"}`, null for unchecked ones.
    public var json: JSONValue {
        func value(_ x: Double?) -> JSONValue { x.map { .double($0) } ?? .null }
        return .object(["max_rel_rmse": value(maxRelativeRMSE), "min_sqnr_db": value(minSQNR),
                        "max_abs_err": value(maxAbsoluteError), "min_cosine": value(minCosine)])
    }
}

/// The result of comparing an original checkpoint with its conversion.
public struct VerificationReport {
    /// One tensor's comparison.
    public struct Tensor {
        /// The tensor's name.
        public var name: String
        /// The original's dtype.
        public var dtype: DType
        /// The shape (the same on both sides).
        public var shape: [Int]
        /// How the converted side stores it: "raw", "nf4", "fp4", "int8" or "safetensors".
        public var scheme: String
        /// Float comparison; nil for tensors compared byte for byte only.
        public var metrics: ErrorMetrics?
        /// For tensors that must come back unchanged: whether the bytes are identical.
        public var identical: Bool?
        /// Thresholds broken (and "not identical" for raw tensors).
        public var violations: [String]

        /// Raw tensors, and non-float tensors, are expected to be exact.
        public var isExactByConstruction: Bool { identical != nil }
    }

    /// Path of the original checkpoint.
    public var original: String
    /// Path of the converted checkpoint or container.
    public var converted: String
    /// The limits the tensors were checked against.
    public var thresholds: VerificationThresholds
    /// Every compared tensor, in the original's order.
    public var tensors: [Tensor]

    /// Tensors that broke a threshold or changed when they should not have.
    public var failures: [Tensor] { tensors.filter { !$0.violations.isEmpty } }

    /// Tensors whose values were approximated (and compared as numbers).
    public var approximatedTensorCount: Int { tensors.filter { !$0.isExactByConstruction }.count }
    /// Tensors that must be, and were checked to be, bit-identical.
    public var identicalTensorCount: Int { tensors.filter { $0.identical == true }.count }

    /// Overall figures over the tensors whose values were approximated
    /// (quantized ones for a container, and raw ones a merge rewrote; every
    /// float tensor for safetensors),
    /// weighted by element count.
    public var overall: ErrorSummary {
        ErrorSummary(tensors.filter { !$0.isExactByConstruction }.compactMap(\.metrics))
    }

    /// The report as docs/CLI.md describes it; per-tensor rows only with `includeTensors`.
    public func json(includeTensors: Bool = true) -> JSONValue {
        var object = JSONObject()
        object.append("original", .string(original))
        object.append("converted", .string(converted))
        object.append("tensor_count", .int(tensors.count))
        object.append("compared_tensor_count", .int(approximatedTensorCount))
        object.append("exact_tensor_count", .int(identicalTensorCount))
        object.append("overall", Self.json(overall))
        object.append("thresholds", thresholds.json)
        object.append("passed", .bool(failures.isEmpty))
        object.append("failures", .array(failures.map { .object(["name": .string($0.name), "violations": .array($0.violations.map { .string($0) })]) }))
        if includeTensors {
            object.append("tensors", .array(tensors.map { tensor in
                var row = JSONObject()
                row.append("name", .string(tensor.name))
                row.append("dtype", .string(tensor.dtype.rawValue))
                row.append("shape", .array(tensor.shape.map { .int($0) }))
                row.append("scheme", .string(tensor.scheme))
                row.append("identical", tensor.identical.map { .bool($0) } ?? .null)
                if let metrics = tensor.metrics { row.append("metrics", Self.json(metrics)) }
                row.append("violations", .array(tensor.violations.map { .string($0) }))
                return .object(row)
            }))
        }
        return .object(object)
    }

    /// JSON has no infinity or NaN, so a non-finite figure is written as null
    /// (`JSONValue.double`). SQNR is +inf for an exact round trip and -inf or
    /// NaN for the worst ones; `exact` tells them apart: a null `sqnr_db` with
    /// `exact: true` is +inf, with `exact: false` it is -inf or NaN.
    static func json(_ m: ErrorMetrics) -> JSONValue {
        .object(["element_count": .int(m.elementCount), "max_abs_err": .double(m.maxAbsoluteError), "rmse": .double(m.rmse),
                 "rel_rmse": .double(m.relativeRMSE), "sqnr_db": .double(m.sqnrDecibels), "cosine": .double(m.cosineSimilarity),
                 "exact": .bool(m.isExact)])
    }

    /// The overall figures, written as `json(_: ErrorMetrics)` writes a tensor's.
    static func json(_ s: ErrorSummary) -> JSONValue {
        .object(["element_count": .int(s.elementCount), "max_abs_err": .double(s.maxAbsoluteError), "rmse": .double(s.rmse),
                 "rel_rmse": .double(s.relativeRMSE), "sqnr_db": .double(s.sqnrDecibels), "cosine": .double(s.cosineSimilarity),
                 "exact": .bool(s.isExact)])
    }
}
