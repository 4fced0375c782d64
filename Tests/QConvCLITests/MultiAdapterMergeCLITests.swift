import Foundation
import XCTest
import QConvKit
import QConvTestSupport

/// `qconv merge-lora BASE A1 A2 ... OUT --method ...` against PEFT 0.21.2's
/// `add_weighted_adapter` + `merge_and_unload()` (interop/multi_adapter).
final class MultiAdapterMergeCLITests: XCTestCase {
    private let root = Fixtures.path("interop/multi_adapter")

    /// One entry of merges.json.
    struct Merge {
        let method: String
        let adapters: [String]
        let weights: [Double]
        let arguments: [String]
        /// PEFT's merged tensors that differ from the base's.
        let reference: String
    }

    private func manifest(_ folder: String) throws -> [Merge] {
        let bytes = try XCTUnwrap(FileManager.default.contents(atPath: folder + "/merges.json"))
        let entries = try XCTUnwrap(JSONParser.parse([UInt8](bytes)).arrayValue)
        return try entries.map { entry in
            let object = try XCTUnwrap(entry.objectValue)
            let method = try XCTUnwrap(object["method"]?.stringValue)
            let adapters = try XCTUnwrap(object["adapters"]?.arrayValue).compactMap(\.stringValue)
            let weights = try XCTUnwrap(object["weights"]?.arrayValue).compactMap { $0.numberValue?.doubleValue }
            var arguments = ["--method", method, "--weights", weights.map { "\($0)" }.joined(separator: ",")]
            if let density = object["density"]?.numberValue?.doubleValue { arguments += ["--density", "\(density)"] }
            if let sign = object["majority_sign_method"]?.stringValue { arguments += ["--majority-sign", sign] }
            if let rank = object["svd_rank"]?.numberValue?.intValue { arguments += ["--svd-rank", "\(rank)"] }
            if let clamp = object["svd_clamp"]?.numberValue?.doubleValue { arguments += ["--svd-clamp", "\(clamp)"] }
            let merged = try XCTUnwrap(object["merged"]?.stringValue)
            return Merge(method: method, adapters: adapters, weights: weights, arguments: arguments,
                         reference: folder + "/" + merged + (merged.hasSuffix(".safetensors") ? "" : ".safetensors"))
        }
    }

    private func floats(_ bytes: [UInt8], _ dtype: DType) -> [Float] {
        let count = bytes.count / dtype.byteWidth!
        var values = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in FloatConversion.decode(raw.baseAddress!, dtype: dtype, count: count, into: &values) }
        return values
    }

    /// Values of `dtype` on one integer line (their bits as stored), so that
    /// neighbours differ by one across zero too.
    private func ordered(_ bytes: [UInt8], _ dtype: DType) -> [Int64] {
        let width = dtype.byteWidth!
        return stride(from: 0, to: bytes.count, by: width).map { start in
            let bits = bytes[start..<start + width].reversed().reduce(Int64(0)) { $0 << 8 | Int64($1) }
            let sign = Int64(1) << (width * 8 - 1)
            return bits & sign != 0 ? -(bits & (sign - 1)) : bits
        }
    }

    /// The merges of shared/refdata (merges.json).
    func testEveryPEFTCombinationMatches() throws {
        let merges = try manifest(root)
        XCTAssertEqual(Set(merges.map(\.method)), ["cat", "linear", "ties", "magnitude_prune", "svd"])
        try check(merges, in: root)
    }

    /// PEFT's merges into 16-bit bases (interop/multi_adapter_16bit/generate.py),
    /// where PEFT makes the combined adapter in the base's dtype: `cat`
    /// rounds the stacked factors and the delta to it; adapters of
    /// `embed_tokens`, stored with their `base_layer.weight`; rsLoRA; and
    /// GPT-2's fan_in_fan_out layers in float32.
    func testPEFTCombinationsInto16BitBasesMatch() throws {
        for (name, methods) in [("f16", ["cat", "svd", "ties_svd"]), ("bf16", ["cat", "linear", "ties", "magnitude_prune", "svd"]),
                                ("gpt2", ["cat", "svd"])] {
            let folder = Fixtures.path("interop/multi_adapter_16bit/" + name)
            let merges = try manifest(folder)
            XCTAssertEqual(merges.map(\.method), methods, name)
            try check(merges, in: folder)
        }
    }

    /// More of PEFT's merges of the same adapters (peft_extra/generate.py):
    /// ties_svd, magnitude_prune_svd, negative weights, another order (an
    /// rsLoRA adapter first: PEFT's combined scale is then sqrt(rank)), the
    /// frequency sign election, the default SVD rank.
    func testMorePEFTCombinationsMatch() throws {
        let merges = try manifest(root + "/peft_extra")
        XCTAssertEqual(Set(merges.map(\.method)), ["cat", "linear", "ties", "svd", "ties_svd", "magnitude_prune_svd"])
        try check(merges, in: root)
    }

    /// Runs each merge and compares it with PEFT's: the factor methods within
    /// one ulp of PEFT's values (in fact bit for bit: qconv sums the products
    /// as torch's sgemm does and rounds where PEFT rounds), the SVD methods
    /// within 1e-5 of each tensor's absmax in float32, and within one unit of
    /// the dtype's precision at the absmax in 16 bits (where SVDs that differ
    /// in their last float32 bits round some values the other way); every
    /// other tensor is the base's, byte for byte, and config.json is copied.
    private func check(_ merges: [Merge], in root: String) throws {
        let base = try SafeTensorsFile(path: root + "/base/model.safetensors")
        for merge in merges {
            let folder = TemporaryDirectory("qconv-multi")
            let out = folder.file("out")
            let result = try runQConv(["merge-lora", root + "/base"] + merge.adapters.map { root + "/" + $0 } + [out] + merge.arguments)
            XCTAssertEqual(result.status, 0, "\(merge.method): \(result.stderr)")
            XCTAssertTrue(result.stdout.hasPrefix("combined \(merge.adapters.count) adapters with \(merge.method) (weights "), result.stdout)
            let ours = try SafeTensorsFile(path: out + "/model.safetensors")
            let peft = try SafeTensorsFile(path: merge.reference)
            XCTAssertEqual(ours.tensors.map(\.name), base.tensors.map(\.name), merge.method)
            XCTAssertEqual(FileManager.default.contents(atPath: out + "/config.json"), FileManager.default.contents(atPath: root + "/base/config.json"))
            var worstULP: Int64 = 0, worstRelative: Float = 0, tolerance: Float = 1e-5
            for tensor in ours.tensors {
                let mine = try ours.bytes(of: tensor), dtype = tensor.info.dtype
                guard let reference = peft.entry(named: tensor.name) else {
                    XCTAssertEqual(mine, try base.bytes(of: XCTUnwrap(base.entry(named: tensor.name))), "\(merge.method): \(tensor.name) is the base's")
                    continue
                }
                XCTAssertEqual(reference.info.dtype, dtype, "\(merge.method): \(tensor.name)")
                let theirs = try peft.bytes(of: reference)
                let x = floats(mine, dtype), y = floats(theirs, dtype)
                XCTAssertEqual(x.count, y.count, "\(merge.method): \(tensor.name)")
                let absmax = y.reduce(Float(0)) { max($0, abs($1)) }
                for (a, b) in zip(x, y) { worstRelative = max(worstRelative, abs(a - b) / absmax) }
                for (a, b) in zip(ordered(mine, dtype), ordered(theirs, dtype)) { worstULP = max(worstULP, abs(a - b)) }
                if dtype == .f16 { tolerance = max(tolerance, Float(Float16.ulpOfOne)) }
                if dtype == .bf16 { tolerance = max(tolerance, 1.0 / 128) }
            }
            print("merge-lora --method \(merge.method) (\(root.split(separator: "/").suffix(2).joined(separator: "/"))): worst \(worstULP) ulp, \(worstRelative) of absmax")
            if merge.method.hasSuffix("svd") {
                XCTAssertLessThanOrEqual(worstRelative, tolerance, merge.method)
            } else {
                XCTAssertLessThanOrEqual(worstULP, 1, merge.method)
            }
        }
    }

    /// merge-lora with the base as a file (OUT: a file).
    private func run(_ arguments: [String]) throws -> ProcessResult {
        try runQConv(["merge-lora", root + "/base/model.safetensors"] + arguments)
    }

    /// DARE draws its masks from seeded SplitMix64 streams: the same seed
    /// gives the same bytes (whatever the threads), another seed other bytes.
    func testDAREIsReproducibleWithItsSeed() throws {
        let folder = TemporaryDirectory("qconv-multi")
        let adapters = [root + "/a1", root + "/a2"]
        var digests: [String: Data] = [:]
        for (name, extra) in [("a", ["--seed", "7"]), ("b", ["--seed", "7", "--threads", "1"]), ("c", ["--seed", "8"]), ("d", [])] {
            for method in ["dare_linear", "dare_ties"] {
                let out = folder.file("\(method)-\(name).safetensors")
                let result = try run(adapters + [out, "--method", method, "--density", "0.5", "--weights", "1,0.5", "--quiet"] + extra)
                XCTAssertEqual(result.status, 0, result.stderr)
                digests["\(method)-\(name)"] = FileManager.default.contents(atPath: out)
            }
        }
        for method in ["dare_linear", "dare_ties"] {
            XCTAssertEqual(digests["\(method)-a"], digests["\(method)-b"], "\(method): the same seed on one thread")
            XCTAssertNotEqual(digests["\(method)-a"], digests["\(method)-c"], "\(method): another seed")
            XCTAssertNotEqual(digests["\(method)-a"], digests["\(method)-d"], "\(method): the default seed is 0")
        }
        XCTAssertNotEqual(digests["dare_linear-a"], digests["dare_ties-a"])
    }

    /// PEFT combines a single adapter linearly: with --weights w the delta is
    /// `(sqrt(w s) B)(sqrt(w s) A) ~ w s B A`, i.e. --scale w up to rounding.
    func testOneAdapterWithWeightsIsCombinedLinearly() throws {
        let folder = TemporaryDirectory("qconv-multi")
        let weighted = try run([root + "/a1", folder.file("w.safetensors"), "--weights", "0.5"])
        XCTAssertEqual(weighted.status, 0, weighted.stderr)
        XCTAssertTrue(weighted.stdout.hasPrefix("combined 1 adapter with linear (weights 0.5)"), weighted.stdout)
        for method in ["svd", "linear"] {
            let result = try run([root + "/a1", folder.file("\(method).safetensors"), "--method", method, "--quiet"])
            XCTAssertEqual(result.status, 0, result.stderr)
        }
        XCTAssertEqual(FileManager.default.contents(atPath: folder.file("svd.safetensors")),
                       FileManager.default.contents(atPath: folder.file("linear.safetensors")), "one adapter: every method is linear")
        XCTAssertEqual(try run([root + "/a1", folder.file("scaled.safetensors"), "--scale", "0.5", "--quiet"]).status, 0)
        let a = try SafeTensorsFile(path: folder.file("w.safetensors")), b = try SafeTensorsFile(path: folder.file("scaled.safetensors"))
        for tensor in a.tensors {
            let x = floats(try a.bytes(of: tensor), .f32), y = floats(try b.bytes(of: XCTUnwrap(b.entry(named: tensor.name))), .f32)
            let absmax = y.reduce(Float(0)) { max($0, abs($1)) }
            for (p, q) in zip(x, y) { XCTAssertLessThanOrEqual(abs(p - q), 1e-6 * absmax, tensor.name) }
        }
    }

    /// Options that do not fit the method are usage errors (exit 2); adapters
    /// PEFT cannot combine that way are refused (exit 3); nothing is written.
    func testRefusals() throws {
        let folder = TemporaryDirectory("qconv-multi")
        let out = folder.file("out")
        let a1 = root + "/a1", a2 = root + "/a2", a3 = root + "/a3"
        let usage: [([String], String)] = [
            ([a1, a2, out], "2 adapters need --method"),
            ([a1, a2, out, "--method", "cat", "--weights", "1"], "--weights gives 1 weight for 2 adapters"),
            ([a1, a2, out, "--method", "ties"], "--method ties needs --density"),
            ([a1, a2, out, "--method", "cat", "--density", "0.5"], "--density goes with --method ties"),
            ([a1, a2, out, "--method", "linear", "--svd-rank", "4"], "--svd-rank goes with --method svd"),
            ([a1, a2, out, "--method", "ties", "--density", "0.5", "--seed", "1"], "--seed goes with --method dare_linear"),
            ([a1, a2, out, "--method", "magnitude_prune", "--density", "0.5", "--majority-sign", "total"], "--majority-sign goes with"),
            ([a1, a2, out, "--method", "svd", "--svd-clamp", "1.5"], "--svd-clamp expects a number in 0...1"),
            ([a1, a2, out, "--method", "mean"], "--method expects one of cat, linear, svd"),
            ([a1, out, "--density", "0.5"], "--density goes with --method"),
        ]
        for (arguments, message) in usage {
            let result = try run(arguments)
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
        let ranks = try run([a1, a3, out, "--method", "linear"])
        XCTAssertEqual(ranks.status, 3, ranks.stderr)
        XCTAssertTrue(ranks.stderr.contains("combination 'linear' adds the adapters' factors element by element and needs one rank"), ranks.stderr)
        XCTAssertTrue(ranks.stderr.contains("a1: r=8") && ranks.stderr.contains("a3: r=4"), ranks.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}
