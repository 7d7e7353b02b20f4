export { EntryLevel, Redactor, encodeEntry, istioTimestamp } from './format';
export { ISTIO_ROLLING, RollingFile, RollingOptions, backupStamp } from './rolling-file';
export { LOG_HTTP_PATH, LOG_POST_TIMEOUT_MS, LOG_SOCKET, postLogLines } from './uds';
export { ConfigLevel, LEVEL_RANK, LOCAL_LOG_NAME, PluginLogger, PluginLoggerOptions } from './plugin-logger';
