// The logging package, without the agent's winston backend (winston-backend.ts), so that
// importing it never loads winston.
export { LIMITS, LogFields, LogRecord, encodeEntry, istioTimestamp, plainValue, renderJson, renderText } from './format';
export { LEVEL_RANK, LogLevel, ScopeLevels, Threshold, applyOutputLevels, isLogLevel, isThreshold, passes } from './levels';
export { Logger, MemoryLogger, PluginRunLogger, nullLogger } from './logger';
export { Redactor } from './redact';
export { ISTIO_ROLLING, RollingFile, RollingOptions, backupStamp } from './rolling-file';
export { LOG_HTTP_PATH, LOG_POST_TIMEOUT_MS, LOG_SOCKET, postLogLines } from './uds';
export { LOCAL_LOG_NAME, PluginLogger, PluginLoggerOptions } from './plugin-logger';
