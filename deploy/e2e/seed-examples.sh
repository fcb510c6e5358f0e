# The seed README's curl examples (shared/seed/ModuleSoftphoneBackend-README.md),
# verbatim except that BASE_URL comes from the environment. The e2e tests run it.
# Base URL
BASE_URL="${BASE_URL:?set BASE_URL}"

# 1) Вход и получение токенов (сохраняем полный ответ)
LOGIN_RES="$(curl -sS -X POST "$BASE_URL/auth/login" \
  -H "Content-Type: application/json" \
  -d '{"username":"201","password":"b749601f329a635a19c4a87bc359be3d"}')"
echo "$LOGIN_RES"

# 2) Извлечь токены (jq не нужен)
# Вариант A (sed -E):
ACCESS_TOKEN="$(printf '%s\n' "$LOGIN_RES" | sed -nE 's/.*"access_token":"([^"]+)".*/\1/p')"
REFRESH_TOKEN="$(printf '%s\n' "$LOGIN_RES" | sed -nE 's/.*"refresh_token":"([^"]+)".*/\1/p')"

# 3) Вызов защищённого эндпоинта
curl -sS "$BASE_URL/profile" \
  -H "Authorization: Bearer $ACCESS_TOKEN"

# 4) Обновление access токена
curl -sS -X POST "$BASE_URL/auth/refresh" \
  -H "Authorization: Bearer $REFRESH_TOKEN"

# 5) Выход
curl -sS -X POST "$BASE_URL/auth/logout" \
  -H "Authorization: Bearer $ACCESS_TOKEN"

# 6) Проверка здоровья (публичный эндпоинт)
curl -sS "$BASE_URL/health"

# 7) Внутренний эндпоинт проверки JWT, используется nginx (вернёт 200/401)
curl -sS "$BASE_URL/check-media-access" \
  -H "Authorization: Bearer $ACCESS_TOKEN"

# Примеры ошибок:
# 401 Unauthorized
curl -sS "$BASE_URL/profile" \
  -H "Authorization: Bearer invalid_token"

# 403 Forbidden (refresh токен вместо access)
curl -sS "$BASE_URL/profile" \
  -H "Authorization: Bearer $REFRESH_TOKEN"

# 400 Bad Request (пустые креды)
curl -sS -X POST "$BASE_URL/auth/login" \
  -H "Content-Type: application/json" \
  -d '{"username":"","password":""}'

# Nchan endpoints (users-state)
# Publisher (без авторизации, только localhost)
curl -sS -X POST "$BASE_URL/pub/users-state" \
  -H "Content-Type: application/json" \
  -d '{"event":"users-state-update"}'

# Subscriber (нужна авторизация; для WS/EventSource токен обычно передаётся параметром)
curl -sS "$BASE_URL/sub/users-state?authorization=$ACCESS_TOKEN"
