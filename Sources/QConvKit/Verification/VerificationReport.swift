import Glibc

/// Limits a round trip must stay within; nil means "not checked". The
/// first four hold for every tensor, the `overall` ones for the summary
/// over the approximated tensors.
public struct VerificationThresholds: Sendable {
    /// Largest relative RMSE allowed, per tensor.
    public var maxRelativeRMSE: Double?
    /// Smallest SQNR in dB allowed, per tensor.
    public var minSQNR: Double?
    /// Largest absolute error allowed, per tensor.
    public var maxAbsoluteError: Double?
    /// Smallest cosine similarity allowed, per tensor.
    public var minCosine: Double?
    /// Largest relative RMSE allowed over all approximated tensors.
    public var maxOverallRelativeRMSE: Double?
    /// Smallest SQNR in dB allowed over all approximated tensors.
    public var minOverallSQNR: Double?

    /// Thresholds; each nil one is not checked.
    public init(maxRelativeRMSE: Double? = nil, minSQNR: Double? = nil, maxAbsoluteError: Double? = nil, minCosine: Double? = nil,
                maxOverallRelativeRMSE: Double? = nil, minOverallSQNR: Double? = nil) {
        self.maxRelativeRMSE = maxRelativeRMSE
        self.minSQNR = minSQNR
        self.maxAbsoluteError = maxAbsoluteError
        self.minCosine = minCosine
        self.maxOverallRelativeRMSE = maxOverallRelativeRMSE
        self.minOverallSQNR = minOverallSQNR
    }

    /// Whether no threshold is set.
    public var isEmpty: Bool {
        [maxRelativeRMSE, minSQNR, maxAbsoluteError, minCosine, maxOverallRelativeRMSE, minOverallSQNR].allSatisfy { $0 == nil }
    }

    /// The per-tensor thresholds `metrics` breaks, as "name value limit"
    /// descriptions (six significant digits). A NaN metric breaks any threshold on it.
    public func violations(of metrics: ErrorMetrics) -> [String] {
        var broken: [String] = []
        if let limit = maxRelativeRMSE, !(metrics.relativeRMSE <= limit) { broken.append(Self.broken("rel_rmse", metrics.relativeRMSE, ">", limit)) }
        if let limit = minSQNR, !(metrics.sqnrDecibels >= limit) { broken.append(Self.broken("sqnr_db", metrics.sqnrDecibels, "<", limit)) }
        if let limit = maxAbsoluteError, !(metrics.maxAbsoluteError <= limit) { broken.append(Self.broken("max_abs_err", metrics.maxAbsoluteError, ">", limit)) }
        if let limit = minCosine, !(metrics.cosineSimilarity >= limit) { broken.append(Self.broken("cosine", metrics.cosineSimilarity, "<", limit)) }
        return broken
    }

    /// The overall thresholds `summary` breaks.
    public func overallViolations(of summary: ErrorSummary) -> [String] {
        var broken: [String] = []
        if let limit = maxOverallRelativeRMSE, !(summary.relativeRMSE <= limit) {
            broken.append(Self.broken("overall rel_rmse", summary.relativeRMSE, ">", limit))
        }
        if let limit = minOverallSQNR, !(summary.sqnrDecibels >= limit) { broken.append(Self.broken("overall sqnr_db", summary.sqnrDecibels, "<", limit)) }
        return broken
    }

    private static func broken(_ metric: String, _ value: Double, _ relation: String, _ limit: Double) -> String {
        "\(metric) \(significant(value)) \(relation) \(significant(limit))"
    }

    /// `value` with six significant digits ("0.0933835", "1.5e-07", "inf").
    public static func significant(_ value: Double) -> String {
        var buffer = [CChar](repeating: 0, count: 40)
        _ = withVaList([value]) { vsnprintf(&buffer, buffer.count, "%.6g", $0) }
        return String(cString: buffer)
    }

    /// `{"max_rel_rmse", "min_sqnr_db", "max_abs_err", "min_cosine",
    /// "max_overall_rel_rmse", "min_overall_sqnr_db"}`, null for unchecked ones.
    public var json: JSONValue {
        func value(_ x: Double?) -> JSONValue { x.map { .double($0) } ?? .null }
        return .object(["max_rel_rmse": value(maxRelativeRMSE), "min_sqnr_db": value(minSQNR),
                        "max_abs_err": value(maxAbsoluteError), "min_cosine": value(minCosine),
                        "max_overall_rel_rmse": value(maxOverallRelativeRMSE), "min_overall_sqnr_db": value(minOverallSQNR)])
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
        /// Its values were approximated: it is stored quantized, or it was
        /// measured and its values differ. The overall figures are over these
        /// tensors, which are the same for a container and for its dequantized copy.
        public var approximated: Bool = false

        /// Compared equal: bit-identical bytes, or measured and exact without being quantized.
        public var isIdentical: Bool { identical ?? (!approximated && metrics?.isExact == true) }
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

    /// The overall thresholds the summary breaks.
    public var overallViolations: [String] { thresholds.overallViolations(of: overall) }

    /// No tensor and no overall figure out of bounds.
    public var passed: Bool { failures.isEmpty && overallViolations.isEmpty }

    /// Tensors whose values were approximated (and compared as numbers).
    public var approximatedTensorCount: Int { tensors.filter(\.approximated).count }
    /// Tensors that compared equal.
    public var identicalTensorCount: Int { tensors.filter(\.isIdentical).count }

    /// The `count` tensors furthest from their originals: the failing ones
    /// first, then by relative RMSE, largest first.
    public func worst(_ count: Int) -> [Tensor] {
        let ranked = tensors.enumerated().sorted { a, b in
            let (x, y) = (a.element, b.element)
            if x.violations.isEmpty != y.violations.isEmpty { return !x.violations.isEmpty }
            let (ex, ey) = (x.metrics?.relativeRMSE ?? -1, y.metrics?.relativeRMSE ?? -1)
            if ex != ey { return ex > ey || ey.isNaN }
            return a.offset < b.offset
        }
        return ranked.prefix(count).map(\.element)
    }

    /// Overall figures over the approximated tensors (quantized ones, and
    /// measured ones whose values differ), weighted by element count.
    public var overall: ErrorSummary {
        ErrorSummary(tensors.filter(\.approximated).compactMap(\.metrics))
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
        object.append("passed", .bool(passed))
        object.append("failures", .array(failures.map { .object(["name": .string($0.name), "violations": .array($0.violations.map { .string($0) })]) }))
        object.append("overall_violations", .array(overallViolations.map { .string($0) }))
        if includeTensors {
            object.append("tensors", .array(tensors.map { tensor in
                var row = JSONObject.tensorRow(name: tensor.name, dtype: tensor.dtype.rawValue, shape: tensor.shape)
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
