-- one PaymentReceived per POST, expected_version any, over 2,000 aggregates
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local body = '{"aggregate_type":"Family","expected_version":"any","user_id":"bench","events":[{"event_type":"PaymentReceived","event_version":2,"data":{"amount":450,"date":"2024-11-15","method":"credit_card"}}]}'
request = function()
  local path = "/v1/streams/family_" .. math.random(1, 2000)
  return wrk.format(nil, path, nil, body)
end
