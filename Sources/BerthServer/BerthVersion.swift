/// The version Berth reports in `/api/v1/system/info`.
public enum BerthVersion {
    public static let version = "0.1.0"
    #if DEBUG
    public static let build = "debug"
    #else
    public static let build = "release"
    #endif
}
